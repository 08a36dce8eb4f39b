"""Pure numerical core of nh-crossbasin: torch/numpy only, no NeuralHydrology imports."""
