/* config.h: every configuration key of dtrain, in one X-macro table (docs/architecture.md "Config
 * X-macro table"). The table generates the struct below, the defaults, the INI handler, validation,
 * --help-config and the printout of the effective configuration (config.c).
 *
 * X(section, key, type, default, min, max, choices, help)
 *   type    INT (long), FLOAT (double), BOOL, STR (free text), CHOICE (one of `choices`),
 *           INTLIST and BOOLLIST (comma-separated, at most DT_LIST_MAX items)
 *   default a string, parsed and validated like a value from a file
 *   min/max the accepted range for INT, FLOAT and the items of INTLIST (ignored otherwise)
 *   choices CHOICE: the accepted values in the order the help lists them, each written once as
 *           V(DT_<SECTION>_<KEY>_<VALUE>, "value"); "" for the other types
 * The table is expanded as DT_CONFIG_KEYS(X, V) with V applied to every value of a choice. A
 * CHOICE key's field holds the enum dt_<section>_<key> made of its values' constants (below),
 * so that past parsing an unknown value cannot exist; dt_<section>_<key>_str gives the text
 * that the INI file, the checkpoint and the messages show.
 */
#ifndef DT_CONFIG_H
#define DT_CONFIG_H

#include <stdio.h>

#include "common.h"

#define DT_LIST_MAX 16
#define DT_STR_MAX 512

#define DT_CONFIG_KEYS(X, V)                                                                   \
  X(data, dataset, CHOICE, "fashion_mnist", 0, 0,                                              \
    V(DT_DATA_DATASET_FASHION_MNIST, "fashion_mnist") V(DT_DATA_DATASET_MNIST, "mnist")        \
    V(DT_DATA_DATASET_KMNIST, "kmnist") V(DT_DATA_DATASET_CIFAR10, "cifar10")                  \
    V(DT_DATA_DATASET_CIFAR100, "cifar100") V(DT_DATA_DATASET_HDF5, "hdf5"),                   \
    "dataset to train and evaluate on; hdf5 = your own images packed into the file data.path " \
    "(README \"Your own data\")")                                                              \
  X(data, dir, STR, "", 0, 0, "",                                                              \
    "directory of the dataset files; empty = /usr/share/datasets/fashion-mnist for "          \
    "fashion_mnist, data/<dataset> otherwise")                                                 \
  X(data, path, STR, "", 0, 0, "",                                                             \
    "dataset = hdf5: the file packed by tools/dtrain_tools/pack_images.py; it gives the "      \
    "classes, image size and normalisation")                                                   \
  X(data, train_limit, INT, "0", 0, 100000000, "", "use only the first N training images (0 = all)") \
  X(data, test_limit, INT, "0", 0, 100000000, "", "evaluate only the first N test images (0 = all)") \
  X(data, loader_threads, INT, "1", 1, 64, "", "threads that augment the next batch while the model computes; they count against the rank's share of the cores") \
  X(model, name, CHOICE, "resnet_preact", 0, 0,                                                \
    V(DT_MODEL_NAME_RESNET_PREACT, "resnet_preact") V(DT_MODEL_NAME_RESNET, "resnet")          \
    V(DT_MODEL_NAME_WRN, "wrn") V(DT_MODEL_NAME_DENSENET, "densenet")                          \
    V(DT_MODEL_NAME_PYRAMIDNET, "pyramidnet") V(DT_MODEL_NAME_RESNEXT, "resnext")              \
    V(DT_MODEL_NAME_SHAKE_SHAKE, "shake_shake")                                                \
    V(DT_MODEL_NAME_SE_RESNET_PREACT, "se_resnet_preact") V(DT_MODEL_NAME_VGG, "vgg"),         \
    "network family, built as docs/reference-experiments.md \"Models\" describes")              \
  X(model, depth, INT, "20", 8, 2000, "",                                                      \
    "depth: 6n+2 (basic) or 9n+2 (bottleneck) for resnet, resnet_preact, se_resnet_preact and " \
    "pyramidnet; 6n+4 for wrn; 3n+4 (basic) or 6n+4 (bottleneck) for densenet; 9n+2 for "      \
    "resnext; 6n+2 for shake_shake; unused by vgg")                                            \
  X(model, block_type, CHOICE, "basic", 0, 0,                                                  \
    V(DT_MODEL_BLOCK_TYPE_BASIC, "basic") V(DT_MODEL_BLOCK_TYPE_BOTTLENECK, "bottleneck"),     \
    "residual block type (resnet, resnet_preact, se_resnet_preact, pyramidnet, densenet; the " \
    "other families have one block type)")                                                     \
  X(model, initial_channels, INT, "16", 1, 4096, "",                                           \
    "resnet, resnet_preact, se_resnet_preact: stem and stage-1 channels c0 (stages c0, 2 c0 e, " \
    "4 c0 e); wrn, pyramidnet: stem channels; resnext: stem channels c0 (stages 4, 8, 16 c0); " \
    "shake_shake: stage-1 channels C of 2xCd (the stem is 16)")                                \
  X(model, remove_first_relu, BOOL, "false", 0, 0, "", "drop the first ReLU of each residual branch") \
  X(model, add_last_bn, BOOL, "false", 0, 0, "", "add a batch norm after the last conv of each branch") \
  X(model, preact_stage, BOOLLIST, "true,true,true", 0, 0, "",                                \
    "per stage: pre-activate the shortcut of the first block (3 values)")                     \
  X(model, widening_factor, INT, "10", 1, 1024, "", "wrn: widening factor k (stages 16k, 32k, 64k)") \
  X(model, drop_rate, FLOAT, "0", 0, 0.99, "",                                                  \
    "wrn: dropout between the two convs of a block; densenet: dropout after every conv "        \
    "(0 = off)")                                                                                \
  X(model, growth_rate, INT, "12", 1, 1024, "", "densenet: growth rate k (the stem has 2k channels)") \
  X(model, compression_rate, FLOAT, "0.5", 0.01, 1, "",                                         \
    "densenet: transitions keep floor(theta C) channels (1 = plain DenseNet)")                 \
  X(model, alpha, FLOAT, "200", 0, 100000, "",                                                  \
    "pyramidnet: total channel increase over all blocks (the last stage ends at "              \
    "initial_channels + alpha, times 4 for bottleneck blocks)")                                \
  X(model, cardinality, INT, "8", 1, 1024, "", "resnext: groups C of the 3x3 convolutions")    \
  X(model, base_channels, INT, "64", 1, 4096, "",                                              \
    "resnext: channels d per group in stage 1 (bottleneck width C d 2^s in stage s)")          \
  X(model, shake_forward, BOOL, "true", 0, 0, "",                                              \
    "shake_shake: random alpha in the forward pass (false: 0.5)")                              \
  X(model, shake_backward, BOOL, "true", 0, 0, "",                                             \
    "shake_shake: random beta in the backward pass (false: 0.5)")                              \
  X(model, shake_image, BOOL, "true", 0, 0, "",                                                \
    "shake_shake: one alpha and beta per image (false: one per batch)")                        \
  X(model, se_reduction, INT, "16", 1, 4096, "",                                               \
    "se_resnet_preact: squeeze-and-excitation reduction r (C -> floor(C/r) -> C)")             \
  X(model, vgg_channels, INTLIST, "64,128,256,512,512", 1, 65536, "",                          \
    "vgg: output channels of each stage (each stage ends in a 2x2 max-pool)")                 \
  X(model, vgg_layers, INTLIST, "2,2,3,3,3", 1, 64, "", "vgg: 3x3 convolutions of each stage") \
  X(model, use_bn, BOOL, "true", 0, 0, "", "vgg: batch norm after every convolution")          \
  X(model, init_mode, CHOICE, "auto", 0, 0,                                                    \
    V(DT_MODEL_INIT_MODE_AUTO, "auto")                                                         \
    V(DT_MODEL_INIT_MODE_KAIMING_FAN_OUT, "kaiming_fan_out")                                   \
    V(DT_MODEL_INIT_MODE_KAIMING_FAN_IN, "kaiming_fan_in"),                                    \
    "fan used by the Kaiming-normal initialisation of conv and linear weights; auto = fan_in " \
    "for wrn, fan_out otherwise (the reference configs); se_resnet_preact always uses fan_out") \
  X(train, epochs, INT, "15", 1, 1000000, "", "number of training epochs")                     \
  X(train, batch_size, INT, "128", 1, 1048576, "", "global batch size (all ranks together)") \
  X(train, eval_batch_size, INT, "256", 1, 1048576, "", "batch size of evaluation")          \
  X(train, seed, INT, "0", 0, 4611686018427387903L, "",                                       \
    "seed of weights, shuffling and augmentation")                                             \
  X(train, threads, INT, "0", 0, 4096, "", "compute threads per rank (0 = OMP_NUM_THREADS, else the rank's share of the cores in its affinity mask)") \
  X(train, max_steps, INT, "0", 0, 1000000000000L, "", "stop after this many steps in total (0 = run every epoch)") \
  X(train, accum_steps, INT, "1", 1, 65536, "",                                                \
    "micro-batches per rank and step: gradients are summed over ranks x accum_steps; batch "  \
    "norm sees each micro-batch (ghost batch norm)")                                          \
  X(train, nonfinite, CHOICE, "stop", 0, 0,                                                    \
    V(DT_TRAIN_NONFINITE_STOP, "stop") V(DT_TRAIN_NONFINITE_SKIP, "skip"),                     \
    "a non-finite loss or gradient: stop the run naming the step, or skip that update")       \
  X(train, precision, CHOICE, "fp32", 0, 0,                                                    \
    V(DT_TRAIN_PRECISION_FP32, "fp32") V(DT_TRAIN_PRECISION_BF16, "bf16")                      \
    V(DT_TRAIN_PRECISION_FP16, "fp16"),                                                        \
    "arithmetic: fp32, bf16 or fp16 operands with fp32 accumulation (tensor cores on the "    \
    "GPU; on the CPU 16-bit activations on oneDNN's kernels where the CPU has bf16 "           \
    "instructions, else emulated by rounding the convolutions' operands); weights, "           \
    "gradients and optimizer stay fp32; fp16 implies dynamic loss scaling (train.loss_scale)") \
  X(train, cuda_graphs, BOOL, "false", 0, 0, "",                                              \
    "--device cuda: record a training step's forward, loss and backward as a CUDA graph once "\
    "and replay it (one pass per step, no dropout or shake-shake, no NCCL); not yet verified " \
    "on a GPU, hence off")                                                                     \
  X(train, deterministic, BOOL, "true", 0, 0, "",                                            \
    "--device cuda: only cuDNN convolution algorithms that give the same bits on every run, "  \
    "and a resumed run reuses the checkpoint's algorithms (bit-exact resume); false allows "   \
    "the fastest, some of which sum with atomics in a varying order")                          \
  X(train, bucket_mb, FLOAT, "4", 0.001, 4096, "",                                             \
    "gradient all-reduce bucket in MiB; with NCCL (--device cuda) each bucket is summed as "   \
    "soon as backward has produced it, overlapping the rest of backward")                     \
  X(train, loss_scale, CHOICE, "auto", 0, 0,                                                   \
    V(DT_TRAIN_LOSS_SCALE_AUTO, "auto") V(DT_TRAIN_LOSS_SCALE_DYNAMIC, "dynamic")              \
    V(DT_TRAIN_LOSS_SCALE_FIXED, "fixed") V(DT_TRAIN_LOSS_SCALE_OFF, "off"),                   \
    "loss scaling: the loss gradient is multiplied by a scale and the gradients divided by it "\
    "before the update; dynamic halves it and skips the step when a gradient overflows and "   \
    "doubles it after loss_scale_growth good steps; auto = dynamic with fp16, off otherwise")  \
  X(train, loss_scale_init, FLOAT, "65536", 1e-30, 1e30, "",                                   \
    "the first (dynamic) or only (fixed) loss scale; a power of two keeps scaling exact")      \
  X(train, loss_scale_growth, INT, "2000", 1, 1000000000, "",                                  \
    "dynamic loss scaling: double the scale after this many steps in a row without overflow") \
  X(optim, name, CHOICE, "sgd", 0, 0,                                                          \
    V(DT_OPTIM_NAME_SGD, "sgd") V(DT_OPTIM_NAME_LARS, "lars") V(DT_OPTIM_NAME_ADAM, "adam")    \
    V(DT_OPTIM_NAME_AMSGRAD, "amsgrad"),                                                       \
    "optimizer (docs/reference-experiments.md \"Optimizers\")")                                \
  X(optim, lr, FLOAT, "0.1", 0, 1e6, "", "base learning rate at the reference batch size")    \
  X(optim, reference_batch, INT, "128", 1, 1048576, "",                                       \
    "linear scaling rule: lr = optim.lr * train.batch_size / reference_batch")                \
  X(optim, momentum, FLOAT, "0.9", 0, 1, "", "momentum")                                       \
  X(optim, nesterov, BOOL, "true", 0, 0, "", "Nesterov momentum")                              \
  X(optim, weight_decay, FLOAT, "5e-4", 0, 1, "", "L2 weight decay added to the gradient")     \
  X(optim, no_decay_bn_bias, BOOL, "false", 0, 0, "",                                          \
    "no weight decay on batch-norm parameters and biases")                                    \
  X(optim, lars_eps, FLOAT, "1e-9", 0, 1, "", "LARS: eps in |w| / (eps + |g| + wd |w|)")       \
  X(optim, lars_threshold, FLOAT, "1e-2", 0, 1e6, "", "LARS: tensors with |w| below this use a trust ratio of 1") \
  X(optim, lars_eta, FLOAT, "0", 0, 1e6, "",                                                   \
    "LARS: trust coefficient multiplying the ratio; 0 = none, as in the reference experiments " \
    "(docs/reference-experiments.md \"Optimizers\")")                                          \
  X(optim, adam_beta1, FLOAT, "0.9", 0, 0.999999, "", "Adam/AMSGrad: beta1")                   \
  X(optim, adam_beta2, FLOAT, "0.999", 0, 0.999999999, "", "Adam/AMSGrad: beta2")              \
  X(optim, adam_eps, FLOAT, "1e-8", 0, 1, "", "Adam/AMSGrad: eps")                             \
  X(schedule, type, CHOICE, "cosine", 0, 0,                                                    \
    V(DT_SCHEDULE_TYPE_CONSTANT, "constant") V(DT_SCHEDULE_TYPE_MULTISTEP, "multistep")        \
    V(DT_SCHEDULE_TYPE_COSINE, "cosine") V(DT_SCHEDULE_TYPE_SGDR, "sgdr")                      \
    V(DT_SCHEDULE_TYPE_LINEAR, "linear") V(DT_SCHEDULE_TYPE_POLY, "poly"),                     \
    "learning-rate schedule after warmup, stepped per iteration")                             \
  X(schedule, milestones, INTLIST, "", 1, 1000000, "", "multistep: epochs (after warmup) at which lr is multiplied by gamma") \
  X(schedule, gamma, FLOAT, "0.1", 0, 1, "", "multistep: decay factor")                       \
  X(schedule, min_factor, FLOAT, "1e-3", 0, 1, "", "cosine: final lr as a fraction of the base lr") \
  X(schedule, warmup_epochs, INT, "0", 0, 1000000, "", "linear warmup epochs (taken from train.epochs)") \
  X(schedule, warmup_start_factor, FLOAT, "1e-3", 0, 1, "", "warmup: lr factor at step 0") \
  X(schedule, warmup_type, CHOICE, "linear", 0, 0,                                             \
    V(DT_SCHEDULE_WARMUP_TYPE_LINEAR, "linear")                                                \
    V(DT_SCHEDULE_WARMUP_TYPE_EXPONENTIAL, "exponential"),                                     \
    "warmup shape: s + (1-s) t/T, or s + (1-s) (t/T)^exponent")                               \
  X(schedule, warmup_exponent, FLOAT, "4", 0.01, 100, "", "exponential warmup: exponent")      \
  X(schedule, t0, INT, "10", 1, 1000000, "", "sgdr: length of the first period in epochs")      \
  X(schedule, t_mul, FLOAT, "1", 1, 100, "",                                                   \
    "sgdr: period growth factor (the periods must sum to the epochs after warmup)")           \
  X(schedule, poly_power, FLOAT, "2", 0.01, 100, "", "poly: f = m + (1-m) (1 - t/T)^power")   \
  X(augment, random_crop, CHOICE, "auto", 0, 0,                                                \
    V(DT_AUGMENT_RANDOM_CROP_AUTO, "auto") V(DT_AUGMENT_RANDOM_CROP_TRUE, "true")              \
    V(DT_AUGMENT_RANDOM_CROP_FALSE, "false"),                                                  \
    "pad and random crop; auto = on for every dataset (docs/reference-experiments.md "        \
    "\"Code generations\")")                                                                  \
  X(augment, crop_padding, INT, "4", 0, 64, "", "random crop: zero padding on each side, in pixels") \
  X(augment, hflip, CHOICE, "auto", 0, 0,                                                      \
    V(DT_AUGMENT_HFLIP_AUTO, "auto") V(DT_AUGMENT_HFLIP_TRUE, "true")                          \
    V(DT_AUGMENT_HFLIP_FALSE, "false"),                                                        \
    "random horizontal flip; auto = on for CIFAR and Fashion-MNIST, off for MNIST and KMNIST, " \
    "the file's default_hflip for hdf5")                                                       \
  X(augment, hflip_prob, FLOAT, "0.5", 0, 1, "", "probability of a horizontal flip")           \
  X(augment, cutout, BOOL, "false", 0, 0, "",                                                  \
    "Cutout after normalisation: a cutout_size square set to 0 (the dataset mean); its centre " \
    "is a uniform integer in [0, W) ([0, W] for even sizes), so the border may clip it")       \
  X(augment, cutout_prob, FLOAT, "1", 0, 1, "", "Cutout and dual_cutout: probability of masking an image") \
  X(augment, cutout_size, INT, "16", 1, 1024, "", "Cutout and dual_cutout: side of the square in pixels") \
  X(augment, cutout_inside, BOOL, "false", 0, 0, "",                                           \
    "Cutout and dual_cutout: keep the centre cutout_size/2 away from the border (the square "   \
    "then lies inside the image; needs cutout_size <= image size)")                            \
  X(augment, random_erasing, BOOL, "false", 0, 0, "",                                          \
    "Random Erasing after Cutout: a rectangle of random area and aspect ratio, filled in every " \
    "channel with one value drawn from U(0,1) in normalised space")                            \
  X(augment, erasing_prob, FLOAT, "0.5", 0, 1, "", "Random Erasing: probability of erasing an image") \
  X(augment, erasing_area_min, FLOAT, "0.02", 0, 1, "",                                       \
    "Random Erasing: smallest rectangle area as a fraction of the image")                      \
  X(augment, erasing_area_max, FLOAT, "0.4", 0, 1, "",                                        \
    "Random Erasing: largest rectangle area as a fraction of the image")                       \
  X(augment, erasing_min_aspect, FLOAT, "0.3", 0.01, 1, "",                                   \
    "Random Erasing: aspect ratio h/w is drawn uniformly from [min, 1/min]")                   \
  X(augment, erasing_max_attempts, INT, "20", 1, 1000, "",                                     \
    "Random Erasing: draws of a rectangle before giving up when none fits the image")          \
  X(augment, dual_cutout, BOOL, "false", 0, 0, "",                                             \
    "Dual-Cutout: two views of each image with independent Cutout draws (cutout_* settings), " \
    "two forward passes, loss = mean of both cross-entropies + dual_cutout_alpha * MSE of the " \
    "logits; excludes cutout, the mixing methods and label_smoothing")                          \
  X(augment, dual_cutout_alpha, FLOAT, "0.1", 0, 1e6, "", "Dual-Cutout: weight of the MSE between the two logits") \
  X(augment, mixup, BOOL, "false", 0, 0, "",                                                   \
    "mixup over the global batch: x = lambda x + (1 - lambda) x[perm], lambda ~ "              \
    "Beta(mixup_alpha, mixup_alpha) once per batch; at most one of mixup, ricap, cutmix")      \
  X(augment, mixup_alpha, FLOAT, "1", 0.001, 1000, "", "mixup: alpha of the Beta distribution") \
  X(augment, ricap, BOOL, "false", 0, 0, "",                                                   \
    "RICAP over the global batch: four corner patches from four permutations of the batch, "   \
    "boundary drawn from Beta(ricap_beta, ricap_beta), targets weighted by patch area")        \
  X(augment, ricap_beta, FLOAT, "0.3", 0.001, 1000, "", "RICAP: beta of the Beta distribution") \
  X(augment, cutmix, BOOL, "false", 0, 0, "",                                                  \
    "CutMix over the global batch, every batch: one box of area fraction about 1 - lambda, "   \
    "lambda ~ Beta(cutmix_alpha, cutmix_alpha), pasted from a permutation of the batch")       \
  X(augment, cutmix_alpha, FLOAT, "1", 0.001, 1000, "", "CutMix: alpha of the Beta distribution") \
  X(augment, label_smoothing, FLOAT, "0", 0, 1, "",                                            \
    "label smoothing epsilon: targets (1 - epsilon) onehot + epsilon / classes (0 = off; the " \
    "reference experiments use 0.001 to 0.1); excludes the mixing methods and dual_cutout")              \
  X(comm, timeout_s, FLOAT, "600", 0, 1e9, "",                                               \
    "--device cuda with NCCL: seconds a rank waits for a step (its device work and "          \
    "all-reduces) before it aborts the job naming itself and the collectives (a dead or hung " \
    "peer); 0 = no limit")                                                                     \
  X(output, dir, STR, "runs/default", 0, 0, "", "run directory: config.ini as run and log.txt") \
  X(output, overwrite, BOOL, "false", 0, 0, "", "allow writing into an existing run directory") \
  X(output, log_every, INT, "50", 1, 1000000000, "", "steps between progress lines and step rows of metrics.h5") \
  X(output, checkpoint_every, INT, "1", 0, 1000000, "", "epochs between checkpoints (0 = only at the end)") \
  X(output, checkpoint_steps, INT, "0", 0, 1000000000, "", "also checkpoint every N steps (0 = off)") \
  X(output, keep_last, INT, "3", 0, 1000000, "", "checkpoints to keep (0 = all)")             \
  X(output, tensorboard, BOOL, "false", 0, 0, "",                                            \
    "rank 0 also writes TensorBoard events to RUN_DIR/tensorboard: every metrics.h5 row as "  \
    "scalars <group>/<column> at its step, and the first training batch as an image")

typedef struct { int n; long v[DT_LIST_MAX]; } dt_intlist;
typedef struct { int n; bool v[DT_LIST_MAX]; } dt_boollist;

/* One enum per CHOICE key, e.g. typedef enum { DT_MODEL_BLOCK_TYPE_BASIC,
 * DT_MODEL_BLOCK_TYPE_BOTTLENECK } dt_model_block_type, and the text of each value:
 * dt_model_block_type_str(DT_MODEL_BLOCK_TYPE_BASIC) is "basic". The enums have no extra
 * member, so a switch over one without a default names every value (-Wswitch). */
#define DT_CFG_ENUM_ITEM(id, text) id,
#define DT_CFG_ENUM_INT(...)
#define DT_CFG_ENUM_FLOAT(...)
#define DT_CFG_ENUM_BOOL(...)
#define DT_CFG_ENUM_STR(...)
#define DT_CFG_ENUM_INTLIST(...)
#define DT_CFG_ENUM_BOOLLIST(...)
#define DT_CFG_ENUM_CHOICE(sec, key, ...)                                                      \
  typedef enum { __VA_ARGS__ } dt_##sec##_##key;                                                \
  const char *dt_##sec##_##key##_str(dt_##sec##_##key value);
#define DT_CFG_ENUM(sec, key, type, def, lo, hi, choices, help) \
  DT_CFG_ENUM_##type(sec, key, choices)
DT_CONFIG_KEYS(DT_CFG_ENUM, DT_CFG_ENUM_ITEM)
#undef DT_CFG_ENUM

/* V for an expansion that does not look at the values of the choices. */
#define DT_CFG_NO_CHOICE(id, text)

#define DT_CFG_CTYPE_INT(sec, key) long
#define DT_CFG_CTYPE_FLOAT(sec, key) double
#define DT_CFG_CTYPE_BOOL(sec, key) bool
#define DT_CFG_CTYPE_STR(sec, key) char *
#define DT_CFG_CTYPE_CHOICE(sec, key) dt_##sec##_##key
#define DT_CFG_CTYPE_INTLIST(sec, key) dt_intlist
#define DT_CFG_CTYPE_BOOLLIST(sec, key) dt_boollist

#define DT_CFG_FIELD(sec, key, type, def, lo, hi, choices, help) \
  DT_CFG_CTYPE_##type(sec, key) sec##_##key;
/* The effective configuration. Strings are owned by the struct (dt_config_free). */
typedef struct dt_config {
  DT_CONFIG_KEYS(DT_CFG_FIELD, DT_CFG_NO_CHOICE)
  char *source;  /* path of the INI file it was read from */
} dt_config;
#undef DT_CFG_FIELD

/* Fill every key with its default. */
void dt_config_defaults(dt_config *cfg);
/* Read `path` over the defaults. Unknown section or key, malformed value, value out of range,
 * unreadable file: DT_ERR_CONFIG with one message naming file, line, section, key and what is
 * accepted. */
dt_status dt_config_load(dt_config *cfg, const char *path);
/* The same from INI text in memory (a checkpoint's /config); messages name `origin`. */
dt_status dt_config_load_text(dt_config *cfg, const char *text, const char *origin);
/* Apply one "section.key=value" override (from --set); errors name the override. */
dt_status dt_config_set(dt_config *cfg, const char *assignment);
/* Checks between keys (depth fits the block type, warmup shorter than training...). */
dt_status dt_config_validate(const dt_config *cfg);
/* Comparing configurations between processes (every MPI rank must run the same one): the
 * number of keys of the table, one 64-bit digest per key of its effective value (FNV-1a of
 * the value as dt_config_write prints it) into out[dt_config_key_count()], the index of the
 * first key whose digests differ in a and b (-1: none), and key i's name "section.key" and
 * value as printed, truncated to the buffers. */
size_t dt_config_key_count(void);
void dt_config_digest(const dt_config *cfg, uint64_t *out);
long dt_config_digest_diff(const uint64_t *a, const uint64_t *b);
void dt_config_key_describe(const dt_config *cfg, size_t i, char *name, size_t name_cap,
                            char *value, size_t value_cap);
/* Write the effective configuration as an INI file that dt_config_load reads back. */
void dt_config_write(const dt_config *cfg, FILE *f);
/* The same text in a string, for the caller to free (checkpoints, --resume comparisons). */
char *dt_config_text(const dt_config *cfg);
/* The values of the CHOICE key section.key: their number (0: not a CHOICE key), the text of
 * value i (NULL past the end), and the value whose text is `text` (-1: none). Tests walk the
 * enums with these; the program uses the typed dt_<section>_<key>_str. */
int dt_config_choice_count(const char *section, const char *key);
const char *dt_config_choice_text(const char *section, const char *key, int i);
int dt_config_choice_parse(const char *section, const char *key, const char *text);
/* --help-config: every key with section, type, default, accepted values and meaning. */
void dt_config_help(FILE *f);
/* The same as a markdown table (the README's configuration reference). */
void dt_config_help_markdown(FILE *f);
void dt_config_free(dt_config *cfg);

#endif
