# The paper's smallest size on OpenWebText: 12 layers, 768 wide, 12 heads, 1024 tokens, ~170M
# parameters with the GPT-2 vocabulary (untied embedding and head, as in FS-DFM's small model).
# torchrun --standalone --nproc_per_node=8 train.py config/openwebtext.py
out_dir = "out-openwebtext"
dataset = "openwebtext"
eval_interval = 1000
eval_iters = 100
log_interval = 10

# 16 sequences x 1024 tokens x 4 micro-steps x 8 GPUs = 524,288 tokens per step
batch_size = 16
block_size = 1024
gradient_accumulation_steps = 4  # per process: with one GPU, raise it to 32 for the same batch

n_layer = 12
n_head = 12
n_embd = 768
n_cond = 128
dropout = 0.0

source = "uniform"  # the source the few-step student gains most from (results/README.md); "mask" has the ELBO
learning_rate = 3e-4
min_lr = 3e-5
max_iters = 200000
warmup_iters = 2000
weight_decay = 0.03
beta1 = 0.9
beta2 = 0.95
compile = True
