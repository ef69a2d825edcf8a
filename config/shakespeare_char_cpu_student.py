# Few-step student distilled from the CPU DFM model (config/shakespeare_char_cpu.py). What an
# iteration costs against a DFM one: docs/speed.md.
# python train.py config/shakespeare_char_cpu_student.py --init_from=out-shakespeare-char-cpu/best.pt
# The student inherits the DFM model's size, source, kappa and data; only the distillation is set
# here, so it distils a CPU-sized model of any dataset (give it its own --out_dir).
kind = "student"
out_dir = "out-shakespeare-char-cpu-student"
eval_interval = 200
eval_iters = 10
log_interval = 25

batch_size = 32  # block_size: the DFM model's

# The recipe, chosen by measurement (results/README.md, the ablation; config/reproduce_shakespeare_char.sh):
# h in {1, 1/2, ..., 1/64}, every exponent equally often: the paper's weights proportional to 1/h spend
# 94% of the draws on h <= 1/8, while 4-8 step sampling uses h = 1/4 and 1/8, and each level of the
# shortcut bootstraps from the one below it; short sequences need no 1/1024 steps
max_step_exponent = 6
step_size_weighting = "uniform"
teacher = "rk4"
teacher_average = "logits"  # the paper's: sharper targets, lower perplexity ("probs" keeps more entropy)
ema_decay = 0.99  # a half-life of ~70 steps: a short run needs a teacher that keeps up

learning_rate = 5e-4
min_lr = 5e-5
max_iters = 800  # against 400 and 1,600: results/README.md, the ablation
warmup_iters = 50
device = "cpu"
