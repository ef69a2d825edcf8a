# DFM on Shakespeare characters, sized for a laptop CPU (give each process OMP_NUM_THREADS=1 when two
# share the cores; --max_iters=2000, as in the quickstart, is a first look in about 15 minutes).
# python train.py config/shakespeare_char_cpu.py            (MASK instead: --source=mask --out_dir=out-shakespeare-char-cpu-mask)
out_dir = "out-shakespeare-char-cpu"
dataset = "shakespeare_char"
eval_interval = 250
eval_iters = 10
log_interval = 25

batch_size = 32
block_size = 128
n_layer = 4
n_head = 4
n_embd = 128
n_cond = 64
dropout = 0.0  # a small model on 8M tokens does not overfit

source = "uniform"  # the source the few-step student gains most from (results/README.md); "mask" has the ELBO
learning_rate = 2e-3  # small models take a large rate
min_lr = 2e-4
max_iters = 16000  # 1024-step perplexity 23.0, 14.9, 11.3, 8.95, 7.80 at 2k to 32k (results/README.md, the
# teacher curve: doubling 16k gains 13%, at twice the time); about 1.5 hours at 3 iterations a second on one core
warmup_iters = 100
beta2 = 0.99
device = "cpu"
