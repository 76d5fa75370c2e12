"""Quality checks: label errors, duplicates, outliers and spot-checks, put up for review as suspects."""
