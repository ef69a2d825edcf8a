# DFM on Shakespeare characters for one GPU, at nanoGPT's shakespeare_char size (12.6M parameters here:
# adaLN modulations and an untied head come on top of nanoGPT's 10.7M).
# python train.py config/shakespeare_char.py            (MASK instead: --source=mask --out_dir=out-shakespeare-char-mask)
out_dir = "out-shakespeare-char"
dataset = "shakespeare_char"
eval_interval = 250
eval_iters = 50
log_interval = 50

batch_size = 64
block_size = 256
n_layer = 6
n_head = 6
n_embd = 384
n_cond = 128
dropout = 0.1  # 10M parameters on 1M characters: diffusion overfits later than AR, but it does

source = "uniform"  # the source the few-step student gains most from (results/README.md); "mask" has the ELBO
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 10000
warmup_iters = 200
