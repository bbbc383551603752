"""The image, the chart, the IAM policy and the shape of the code base."""
