// Command meshbot-kube-apiserver runs the real kube-apiserver (from the k8s.io/kubernetes module)
// on an embedded etcd, in one process, for meshbot's test suite.
//
// Everything listens on loopback. The ports, the data directory and the static token file come
// from flags; the service-account key pair is generated into the data directory, and
// kube-apiserver writes its self-signed serving certificate (valid for 127.0.0.1) to
// <data-dir>/certs/apiserver.crt. No controllers run. When /readyz answers 200 one line is
// printed on stdout:
//
//	meshbot-kube-apiserver ready url=https://127.0.0.1:<port> ca=<data-dir>/certs/apiserver.crt
//
// Arguments after the flags (after "--") are appended to kube-apiserver's own arguments.
// SIGTERM or SIGINT stops kube-apiserver gracefully, then etcd.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // kube-apiserver's JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // its client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // its version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

type options struct {
	dataDir        string
	bindAddress    string
	securePort     int
	etcdClientPort int
	etcdPeerPort   int
	tokenFile      string
	readyTimeout   time.Duration
	extraArgs      []string
}

func parseFlags() (options, error) {
	var o options
	fs := flag.NewFlagSet("meshbot-kube-apiserver", flag.ContinueOnError)
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for etcd's data, keys and certificates (required)")
	fs.StringVar(&o.bindAddress, "bind-address", "127.0.0.1", "loopback address to listen on")
	fs.IntVar(&o.securePort, "secure-port", 0, "kube-apiserver's HTTPS port (required)")
	fs.IntVar(&o.etcdClientPort, "etcd-client-port", 0, "embedded etcd's client port (required)")
	fs.IntVar(&o.etcdPeerPort, "etcd-peer-port", 0, "embedded etcd's peer port (required)")
	fs.StringVar(&o.tokenFile, "token-file", "", "kube-apiserver --token-auth-file (CSV: token,user,uid,\"group1,group2\") (required)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 3*time.Minute, "give up when /readyz has not answered 200 by then")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return o, err
	}
	o.extraArgs = fs.Args()
	var missing []string
	if o.dataDir == "" {
		missing = append(missing, "-data-dir")
	}
	if o.securePort == 0 {
		missing = append(missing, "-secure-port")
	}
	if o.etcdClientPort == 0 {
		missing = append(missing, "-etcd-client-port")
	}
	if o.etcdPeerPort == 0 {
		missing = append(missing, "-etcd-peer-port")
	}
	if o.tokenFile == "" {
		missing = append(missing, "-token-file")
	}
	if len(missing) > 0 {
		return o, fmt.Errorf("missing required flags: %v", missing)
	}
	ip := net.ParseIP(o.bindAddress)
	if ip == nil || !ip.IsLoopback() {
		return o, fmt.Errorf("-bind-address must be a loopback IP, got %q", o.bindAddress)
	}
	abs, err := filepath.Abs(o.dataDir)
	if err != nil {
		return o, err
	}
	o.dataDir = abs
	if o.tokenFile, err = filepath.Abs(o.tokenFile); err != nil {
		return o, err
	}
	return o, nil
}

// ensureServiceAccountKeys writes an RSA key pair for signing and verifying service-account
// tokens, unless a previous run left one in dir.
func ensureServiceAccountKeys(dir string) (keyFile, pubFile string, err error) {
	keyFile = filepath.Join(dir, "sa.key")
	pubFile = filepath.Join(dir, "sa.pub")
	if _, err := os.Stat(keyFile); err == nil {
		if _, err := os.Stat(pubFile); err == nil {
			return keyFile, pubFile, nil
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pubFile, pubPEM, 0o644); err != nil {
		return "", "", err
	}
	return keyFile, pubFile, nil
}

func startEtcd(o options) (*embed.Etcd, error) {
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(o.bindAddress, strconv.Itoa(o.etcdClientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(o.bindAddress, strconv.Itoa(o.etcdPeerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "meshbot-test"
	cfg.Dir = filepath.Join(o.dataDir, "etcd")
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	// A throw-away test store: durability is not worth an fsync per write.
	cfg.UnsafeNoFsync = true

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, errors.New("etcd was not ready within 60s")
	}
}

func apiserverArgs(o options, certDir, saKey, saPub string) []string {
	etcdURL := "http://" + net.JoinHostPort(o.bindAddress, strconv.Itoa(o.etcdClientPort))
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + o.bindAddress,
		"--advertise-address=" + o.bindAddress,
		"--secure-port=" + strconv.Itoa(o.securePort),
		"--cert-dir=" + certDir,
		"--token-auth-file=" + o.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		// The endpoint reconciler would publish the loopback advertise address as the endpoint
		// of the "kubernetes" Service, which Endpoints validation rejects.
		"--endpoint-reconciler-type=none",
		// ServiceAccount admission wants every namespace's "default" ServiceAccount, which only
		// the (absent) service-account controller creates.
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
	}
	return append(args, o.extraArgs...)
}

// announceReady polls /readyz, verifying the serving certificate kube-apiserver generated, and
// prints the ready line once it answers 200.
func announceReady(ctx context.Context, o options, certFile string) {
	base := "https://" + net.JoinHostPort(o.bindAddress, strconv.Itoa(o.securePort))
	deadline := time.Now().Add(o.readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		pemBytes, err := os.ReadFile(certFile)
		if err != nil {
			continue
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			continue
		}
		client := &http.Client{
			Timeout:   2 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		}
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			fmt.Printf("meshbot-kube-apiserver ready url=%s ca=%s\n", base, certFile)
			return
		}
	}
	fmt.Fprintf(os.Stderr, "meshbot-kube-apiserver: /readyz not 200 after %s\n", o.readyTimeout)
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshbot-kube-apiserver: %v\n", err)
		os.Exit(2)
	}
	pkiDir := filepath.Join(o.dataDir, "pki")
	certDir := filepath.Join(o.dataDir, "certs")
	for _, dir := range []string{o.dataDir, pkiDir, certDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			fmt.Fprintf(os.Stderr, "meshbot-kube-apiserver: %v\n", err)
			os.Exit(1)
		}
	}
	saKey, saPub, err := ensureServiceAccountKeys(pkiDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshbot-kube-apiserver: service-account keys: %v\n", err)
		os.Exit(1)
	}

	etcd, err := startEtcd(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshbot-kube-apiserver: %v\n", err)
		os.Exit(1)
	}
	var stopping atomic.Bool
	go func() {
		// etcd dying under a running kube-apiserver leaves nothing worth serving. (While it
		// is being closed, its listeners report errors on this channel too: those are expected.)
		if err, ok := <-etcd.Err(); ok && err != nil && !stopping.Load() {
			fmt.Fprintf(os.Stderr, "meshbot-kube-apiserver: etcd failed: %v\n", err)
			os.Exit(1)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	go announceReady(ctx, o, filepath.Join(certDir, "apiserver.crt"))

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(apiserverArgs(o, certDir, saKey, saPub))
	code := cli.Run(cmd)

	cancel()
	stopping.Store(true)
	etcd.Close()
	os.Exit(code)
}
