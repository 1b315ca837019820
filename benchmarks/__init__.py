"""`make bench`: throughput and memory of ser-ssl, as ratios against baselines from the same run."""
