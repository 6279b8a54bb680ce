"""The bilevel optimisation of ψ: inverse Hessian-vector products, hypergradient estimators (Neural-Sim pathwise,
Auto-Sim score function, LTS REINFORCE, per-bin influence) on generic render and loss callables."""
