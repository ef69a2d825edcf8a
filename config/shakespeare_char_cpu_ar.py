# The autoregressive baseline and judge for Shakespeare-char on a CPU.
#   python train.py config/shakespeare_char_cpu_ar.py
# The same blocks as the DFM model with a causal mask (kind = "ar"), trained with next-token
# cross-entropy. eval.py uses it to score samples (generative perplexity) and as the AR row of the
# quality tables. About 0.8M parameters; 1500 iterations of 16 x 128 characters are about 3 passes
# over the 1M training characters.

out_dir = "out-shakespeare-char-ar"
kind = "ar"
dataset = "shakespeare_char"
eval_interval = 250  # each evaluation costs about 2 x eval_iters forward passes
eval_iters = 20
log_interval = 50
# eval.py judges with out_dir/best.pt, the weights of the best validation loss: a judge should not be overfit

# small enough for a CPU, deep enough to learn words; block 128 covers the quality samples, whose
# length is the smallest block_size among the models scored
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
batch_size = 16  # 32 halves the noise but doubles the time; 16 is the better trade on 2 cores
dropout = 0.0  # a few passes over the data: no overfitting to fight yet

# a small model tolerates a high learning rate; cosine decay to a tenth over the whole run
learning_rate = 2e-3
min_lr = 2e-4
max_iters = 1500
warmup_iters = 100
beta2 = 0.99  # few tokens per iteration: a shorter second-moment memory

device = "cpu"
compile = False  # compilation costs more than it saves in a run this short
