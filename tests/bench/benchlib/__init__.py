"""Side-by-side benchmark of assetfs against s3fs and rclone mount (tests/bench/run)."""
