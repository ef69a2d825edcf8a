# Few-step student distilled from the CPU DFM model (config/shakespeare_char_cpu.py): about 4 minutes
# on 2 CPU cores (measured on a 2-core machine, nothing else running).
# python train.py config/shakespeare_char_cpu_student.py --init_from=out-shakespeare-char-cpu/ckpt.pt
# The student inherits the DFM model's size, source, kappa and data; only the distillation is set
# here, so it distils a CPU-sized model of any dataset (give it its own --out_dir).
kind = "student"
out_dir = "out-shakespeare-char-cpu-student"
eval_interval = 200
eval_iters = 10
log_interval = 25

batch_size = 32
block_size = 128

# h in {1, 1/2, ..., 1/64}, weighted by 1/h: short sequences need no 1/1024 steps, and a smaller
# grid gives the 1-8 step sizes the student is for a larger share of the few iterations a CPU affords
max_step_exponent = 6
teacher = "rk4"
ema_decay = 0.99  # a half-life of ~70 steps: a short run needs a teacher that keeps up

learning_rate = 5e-4
min_lr = 5e-5
max_iters = 800
warmup_iters = 50
device = "cpu"
