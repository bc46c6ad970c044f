"""Allocation across strategies: covariance estimation, the six methods (cvxpy problems built once and
exact numpy algorithms), volatility targeting. Pure: arrays in, weights or a reason out; used by the
optimizer service and by the offline `rebal optimize`."""
