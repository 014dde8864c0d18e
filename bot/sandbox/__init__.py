"""`rotabot sandbox`: the real bot, a local Slack stand-in and a Slack-like page, on one address."""
