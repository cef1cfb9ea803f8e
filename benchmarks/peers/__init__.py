"""The scripts automl's benchmarks compare against, written the way users write them."""
