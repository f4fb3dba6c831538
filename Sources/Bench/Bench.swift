// Measurements of `rqat bench`.
