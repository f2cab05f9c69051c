/* main.c: the dtrain command line. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_eval.h"
#include "comm/comm.h"
#include "config.h"
#include "dump_batch.h"
#include "io/rundir.h"
#include "thread_plan.h"
#include "train.h"

static const struct option long_options[] = {
    {"set", required_argument, NULL, 's'},     {"device", required_argument, NULL, 'd'},
    {"dry-run", no_argument, NULL, 'n'},       {"bench", required_argument, NULL, 'b'},
    {"help", no_argument, NULL, 'h'},          {"help-config", optional_argument, NULL, 'H'},
    {"version", no_argument, NULL, 'V'},       {"resume", required_argument, NULL, 'r'},
    {"init", required_argument, NULL, 'i'},    {"dump-batch", required_argument, NULL, 'P'},
    {"eval", required_argument, NULL, 'e'},    {"predict", required_argument, NULL, 'p'},
    {"csv", required_argument, NULL, 'c'},     {"top", required_argument, NULL, 't'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: dtrain CONFIG.ini [options]\n"
          "       dtrain --resume RUN_DIR [--set SECTION.KEY=VALUE]...\n"
          "       dtrain --eval RUN_DIR|CHECKPOINT.h5 [CONFIG.ini] [--set ...] [--csv FILE]\n"
          "       dtrain --predict CHECKPOINT.h5 IMAGES.h5... [--top K] [--set ...]\n"
          "Trains an image classifier described by CONFIG.ini (see --help-config); under mpirun\n"
          "or srun every rank computes its slice of each global batch.\n\n"
          "  --set SECTION.KEY=VALUE  override one configuration key (repeatable)\n"
          "  --device cpu|cuda        compute device (default cpu)\n"
          "  --resume RUN_DIR         continue the run in RUN_DIR from its latest checkpoint,\n"
          "                           with the configuration it was started with (RUN_DIR/config.ini);\n"
          "                           --set changes are written back to it (not the model, data,\n"
          "                           batch size, seed, optimizer or output.dir)\n"
          "  --init FILE.h5           start from the weights (and batch-norm statistics) of a\n"
          "                           checkpoint; every name and shape must match the model\n"
          "  --eval RUN_DIR|CKPT.h5   evaluate a checkpoint (a run's latest) on the test split of\n"
          "                           its own configuration (or CONFIG.ini), on one or many ranks,\n"
          "                           as training does: loss, top-1, top-5, per-class accuracy,\n"
          "                           confusion matrix\n"
          "  --csv FILE               --eval: also write the per-class table and confusion matrix\n"
          "  --predict CKPT.h5        top-K classes and probabilities of every image of IMAGES.h5\n"
          "                           (packed by tools/dtrain_tools/pack_images.py\n"
          "                           --predict-images), as CSV on stdout\n"
          "  --top K                  --predict: classes per image (default 5)\n"
          "  --dry-run                print the effective configuration and a model summary,\n"
          "                           validate the dataset, print each rank's threads, and exit\n"
          "  --bench STEPS            time STEPS training steps after a warm-up; prints\n"
          "                           'bench_with_data: X images/s' and 'bench: X images/s'\n"
          "  --dump-batch FILE.png    write the first training batch, augmented and mixed as\n"
          "                           training makes it, as a picture (soft targets drawn as\n"
          "                           bars and listed in FILE.txt), and exit\n"
          "  --help                   this text\n"
          "  --help-config[=markdown] every configuration key: type, default, range, meaning\n"
          "  --version                print the version\n\n"
          "exit status: 0 done, 1 bad input, 2 the run failed, 3 out of memory or a device, MPI\n"
          "or HDF5 failure (every rank stopped), 143 stopped by SIGTERM/SIGUSR1 after writing a\n"
          "checkpoint (continue with --resume)\n\n"
          "examples:\n"
          "  ./dtrain configs/quickstart.ini\n"
          "  ./dtrain configs/quickstart.ini --set train.epochs=1 --set output.dir=runs/try\n"
          "  mpirun -np 8 ./dtrain configs/resnext29.ini\n");
}

/* Command-line and config errors are the same on every rank: rank 0 reports them. */
static int fail(const char *what) {
  if (dt_comm_world_rank() == 0) fprintf(stderr, "dtrain: %s\n", what);
  return 1;
}

int main(int argc, char **argv) {
  dt_wait_policy_apply(argv); /* may re-execute dtrain: before MPI and OpenMP start */
  dt_train_catch_signals();
  dt_comm *comm = dt_comm_init(&argc, &argv);
  const char *sets[256];
  int n_sets = 0;
  const char *device_name = "cpu";
  const char *resume_dir = NULL, *init_path = NULL;
  const char *dump_path = NULL;
  const char *eval_target = NULL, *predict_ckpt = NULL, *csv_path = NULL;
  long top = 5;
  bool dry_run = false;
  long bench_steps = 0;
  int opt;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
    switch (opt) {
      case 's':
        if (n_sets == (int)DT_ARRAY_LEN(sets)) return fail("too many --set options");
        sets[n_sets++] = optarg;
        break;
      case 'd':
        device_name = optarg;
        break;
      case 'n':
        dry_run = true;
        break;
      case 'r':
        resume_dir = optarg;
        break;
      case 'i':
        init_path = optarg;
        break;
      case 'P':
        dump_path = optarg;
        break;
      case 'e':
        eval_target = optarg;
        break;
      case 'p':
        predict_ckpt = optarg;
        break;
      case 'c':
        csv_path = optarg;
        break;
      case 't': {
        char *end;
        top = strtol(optarg, &end, 10);
        if (*optarg == 0 || *end != 0 || top < 1 || top > 256) {
          fprintf(stderr, "dtrain: --top %s: expected a number of classes in [1, 256]\n", optarg);
          return 1;
        }
        break;
      }
      case 'b': {
        char *end;
        bench_steps = strtol(optarg, &end, 10);
        if (*optarg == 0 || *end != 0 || bench_steps < 1 || bench_steps > 1000000) {
          fprintf(stderr, "dtrain: --bench %s: expected a number of steps in [1, 1000000]\n", optarg);
          return 1;
        }
        break;
      }
      case 'h':
        usage(stdout);
        return 0;
      case 'H':
        if (optarg && strcmp(optarg, "markdown") == 0) {
          dt_config_help_markdown(stdout);
          return 0;
        }
        if (optarg) {
          fprintf(stderr, "dtrain: --help-config=%s: expected no value or 'markdown'\n", optarg);
          return 1;
        }
        dt_config_help(stdout);
        return 0;
      case 'V':
        printf("dtrain %s\n", DT_VERSION);
        return 0;
      default:
        fprintf(stderr, "dtrain: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
        return 1;
    }
  }
  if (eval_target || predict_ckpt || bench_steps || dry_run) dt_train_release_signals();
  if (eval_target || predict_ckpt) {
    if (eval_target && predict_ckpt) return fail("--eval and --predict exclude each other");
    if (resume_dir || init_path || dump_path || dry_run || bench_steps)
      return fail("--eval and --predict take no --resume, --init, --dump-batch, --dry-run or --bench");
    if (csv_path && !eval_target) return fail("--csv is for --eval");
    dt_device dev;
    if (strcmp(device_name, "cpu") == 0)
      dev = DT_DEVICE_CPU;
    else if (strcmp(device_name, "cuda") == 0)
      dev = DT_DEVICE_CUDA;
    else {
      fprintf(stderr, "dtrain: --device %s: expected cpu or cuda\n", device_name);
      return 1;
    }
    dt_cli_opts o = {dev, NULL, sets, n_sets, csv_path, (int)top};
    int status;
    if (eval_target) {
      if (argc - optind > 1) return fail("--eval takes at most one CONFIG.ini");
      o.config_path = optind < argc ? argv[optind] : NULL;
      status = dt_cli_eval(eval_target, &o, comm);
    } else {
      status = dt_cli_predict(predict_ckpt, (const char *const *)argv + optind, argc - optind, &o,
                              comm);
    }
    dt_comm_finalize(comm);
    return status;
  }
  if (csv_path) return fail("--csv is for --eval");
  char resume_config[4200];
  const char *config_path;
  if (resume_dir) {
    if (optind != argc)
      return fail("--resume uses the run's own config.ini: give no CONFIG.ini (override keys "
                  "with --set)");
    if (init_path) return fail("--resume and --init exclude each other");
    snprintf(resume_config, sizeof resume_config, "%s/config.ini", resume_dir);
    config_path = resume_config;
  } else if (optind != argc - 1) {
    usage(stderr);
    return fail(optind >= argc ? "missing CONFIG.ini" : "expected exactly one CONFIG.ini");
  } else {
    config_path = argv[optind];
  }
  dt_device device;
  if (strcmp(device_name, "cpu") == 0)
    device = DT_DEVICE_CPU;
  else if (strcmp(device_name, "cuda") == 0)
    device = DT_DEVICE_CUDA;
  else {
    fprintf(stderr, "dtrain: --device %s: expected cpu or cuda\n", device_name);
    return 1;
  }

  dt_config cfg;
  dt_config_defaults(&cfg);
  if (dt_config_load(&cfg, config_path) != DT_OK) return fail(dt_error_message());
  for (int i = 0; i < n_sets; i++)
    if (dt_config_set(&cfg, sets[i]) != DT_OK) return fail(dt_error_message());
  if (dt_config_validate(&cfg) != DT_OK) return fail(dt_error_message());
  /* --resume --set: what changes is recorded in the run (config.ini, log.txt), and what cannot
   * change in the middle of a run is refused. */
  char *changes = NULL;
  if (resume_dir && n_sets > 0) {
    dt_config before;
    dt_config_defaults(&before);
    dt_status st = dt_config_load(&before, config_path);
    if (st == DT_OK) st = dt_rundir_config_changes(&before, &cfg, resume_dir, &changes);
    dt_config_free(&before);
    if (st != DT_OK) return fail(dt_error_message());
  }

  int status;
  if (dump_path)
    status = dt_dump_batch(&cfg, dump_path) == DT_OK ? 0 : fail(dt_error_message());
  else if (dry_run) {
    status = dt_train_dry_run(&cfg);
    /* The thread decision each rank would train with (collective: every rank gets here). */
    dt_thread_plan plan;
    char line[256], mine[256];
    dt_thread_plan_start(comm, &cfg, device, &plan, NULL, line, sizeof line);
    dt_thread_plan_describe_rank(&plan, dt_comm_rank(comm), dt_comm_size(comm), mine, sizeof mine);
    if (status == 0 && dt_comm_rank(comm) == 0) printf("\n%s\n", line);
    if (status == 0) printf("%s\n", mine);
  } else if (bench_steps > 0)
    status = dt_train_bench(&cfg, comm, device, bench_steps);
  else {
    dt_run_opts opts = {device, resume_dir, init_path, changes};
    status = dt_train_run(&cfg, comm, &opts);
  }
  free(changes);
  dt_config_free(&cfg);
  dt_comm_finalize(comm);
  return status;
}
