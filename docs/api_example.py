import dnn_search as ds
data = ds.load_dataset("MNIST1D")  # x_train, y_train, x_test, y_test tensors
cfg = ds.MetaConfig(n_activations=2, inner_hidden_size=20, outer_hidden_size=8, epochs=1, steps=2)
learner = ds.MetaLearner.from_dataset(cfg, data)
print([learner.step().heldout for _ in range(cfg.steps)][-1], learner.activations().evaluate([-1.0, 0.0, 1.0]))
