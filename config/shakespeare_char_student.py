# Few-step student distilled from the GPU DFM model (config/shakespeare_char.py).
# python train.py config/shakespeare_char_student.py --init_from=out-shakespeare-char/ckpt.pt
# The student inherits the DFM model's size, source, kappa and data; only the distillation is set here.
kind = "student"
out_dir = "out-shakespeare-char-student"
eval_interval = 500
eval_iters = 50
log_interval = 50

batch_size = 64  # block_size: the DFM model's

max_step_exponent = 8  # h down to 1/256: the finest step the DFM baseline is sampled with here
teacher = "rk4"
ema_decay = 0.999

learning_rate = 3e-4
min_lr = 3e-5
max_iters = 10000
warmup_iters = 200
