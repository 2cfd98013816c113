"""What each stage writes besides its metrics: one module per stage (pretrain, evaluate, compare, reward,
rlhf), so a stage's code deps hold only its own writer. The domain code computes the tables, figures and
Markdown; these modules put them at the stage's output paths (tinygpt.pipeline.paths)."""
