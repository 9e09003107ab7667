"""The io stage's Beam side: ReadDocuments, ResolveDuplicateIds, ShardBatches, WriteShards, snapshots."""
