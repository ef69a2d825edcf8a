# DFM on Tiny Shakespeare with GPT-2 BPE tokens (data/shakespeare/prepare.py); small, for one GPU.
# python train.py config/shakespeare.py
out_dir = "out-shakespeare"
dataset = "shakespeare"
eval_interval = 250
eval_iters = 20
log_interval = 25

batch_size = 32
block_size = 256
n_layer = 6
n_head = 6
n_embd = 384
n_cond = 128
dropout = 0.2  # 300k training tokens: a BPE model of this size overfits quickly

source = "uniform"  # the source the few-step student gains most from (results/README.md); "mask" has the ELBO
learning_rate = 6e-4
min_lr = 6e-5
max_iters = 3000
warmup_iters = 100
