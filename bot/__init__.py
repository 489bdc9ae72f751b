"""A Slack app that puts OpenAI assistants into Slack."""
