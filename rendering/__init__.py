"""Every word a person reads in Slack, by feature; imported by the bot and the jobs."""
