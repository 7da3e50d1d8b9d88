"""Discord cogs: searching (soundalike), index upkeep (moderation) and /help."""
