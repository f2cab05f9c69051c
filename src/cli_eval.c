/* cli_eval.c: --eval and --predict (cli_eval.h). Both rebuild the model of a checkpoint from
 * its configuration (predict.c).
 *
 * --eval is training's evaluation (evaluate.c), run to the image as training runs it: the same
 * test split (data.test_limit), the same normalisation (the dataset's), the same evaluation
 * batches (dt_eval_loader_cfg) and batch norm with its running statistics; a sink of
 * dt_evaluate adds the per-class table and the confusion matrix. With the same number of ranks
 * as training, every image goes through the same batch shape, so its logits are the very
 * floats training computed; other rank counts may differ in the last bits. */
#include "cli_eval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "data/loader.h"
#include "evaluate.h"
#include "io/checkpoint.h"
#include "io/h5util.h"
#include "loader_options.h"
#include "predict.h"
#include "ranks.h"
#include "thread_plan.h"

enum { CLI_PATH = 4200 };

static int cli_fail(dt_comm *comm, dt_status st) {
  (void)st;
  if (dt_comm_rank(comm) == 0) fprintf(stderr, "dtrain: %s\n", dt_error_message());
  return 1;
}

/* The checkpoint of target (a file, or a run directory's latest) and the configuration it is
 * used with: CONFIG.ini when given, else the checkpoint's own; then the --set overrides. */
static dt_status cli_resolve(const char *target, const dt_cli_opts *o, char *ckpt, dt_config *cfg) {
  struct stat sb;
  dt_status st;
  if (stat(target, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    st = dt_checkpoint_latest(target, ckpt, CLI_PATH);
    if (st != DT_OK) return st;
  } else {
    snprintf(ckpt, CLI_PATH, "%s", target);
  }
  if (o->config_path) {
    st = dt_config_load(cfg, o->config_path);
  } else {
    char *text = NULL;
    st = dt_checkpoint_read_config(ckpt, &text);
    if (st == DT_OK) {
      char origin[CLI_PATH + 16];
      snprintf(origin, sizeof origin, "%s:/config", ckpt);
      st = dt_config_load_text(cfg, text, origin);
    }
    free(text);
  }
  for (int i = 0; st == DT_OK && i < o->n_sets; i++) st = dt_config_set(cfg, o->sets[i]);
  if (st == DT_OK) st = dt_config_validate(cfg);
  return st;
}

/* The class name for tables: the file's, or the index. */
static const char *cli_class_name(const dt_dataset *ds, int k, char *buf, size_t cap) {
  if (ds->class_names) return ds->class_names[k];
  snprintf(buf, cap, "%d", k);
  return buf;
}

/* A CSV field: quoted when it holds a comma, quote or line break. */
static void csv_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\n\r")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

/* Per class k: images, top-1 and top-5 correct, loss sum; then the K x K confusion counts. */
typedef struct {
  int K;
  double *images, *top1, *top5, *loss, *confusion; /* one allocation, in this order */
} eval_table;

/* The sink of dt_evaluate: this rank's rows into the table (reduced over the ranks after). */
static void eval_table_add(void *ctx, const dt_eval_batch *b) {
  eval_table *t = ctx;
  const int K = b->classes;
  for (int i = 0; i < b->n; i++) {
    const int y = b->labels[i];
    const float *z = b->logits + (size_t)i * K;
    const int above = dt_eval_label_rank(z, y, K);
    t->images[y] += 1;
    t->top1[y] += above < 1;
    t->top5[y] += above < DT_MIN(5, K);
    t->loss[y] += b->losses[i];
    t->confusion[(size_t)y * K + dt_eval_argmax(z, K)] += 1;
  }
}

static void eval_table_write_csv(const eval_table *t, const dt_dataset *ds, FILE *f) {
  const int K = t->K;
  fprintf(f, "class,name,images,top1_correct,top1_percent,top5_correct,top5_percent,loss");
  for (int j = 0; j < K; j++) fprintf(f, ",predicted_%d", j);
  fprintf(f, "\n");
  double all[4] = {0, 0, 0, 0};
  char buf[32];
  for (int k = 0; k <= K; k++) {
    const bool total = k == K;
    double n = total ? all[0] : t->images[k], c1 = total ? all[1] : t->top1[k],
           c5 = total ? all[2] : t->top5[k], l = total ? all[3] : t->loss[k];
    if (total) {
      fprintf(f, "all,all");
    } else {
      fprintf(f, "%d,", k);
      csv_field(f, cli_class_name(ds, k, buf, sizeof buf));
      all[0] += n, all[1] += c1, all[2] += c5, all[3] += l;
    }
    fprintf(f, ",%.0f,%.0f,%.4f,%.0f,%.4f,%.6f", n, c1, n > 0 ? 100.0 * c1 / n : NAN, c5,
            n > 0 ? 100.0 * c5 / n : NAN, n > 0 ? l / n : NAN);
    for (int j = 0; j < K; j++) {
      double v = 0;
      if (total)
        for (int i = 0; i < K; i++) v += t->confusion[(size_t)i * K + j];
      else
        v = t->confusion[(size_t)k * K + j];
      fprintf(f, ",%.0f", v);
    }
    fprintf(f, "\n");
  }
}

/* Write the CSV through a temporary file and a rename: a failed write leaves nothing. */
static dt_status eval_write_csv(const eval_table *t, const dt_dataset *ds, const char *path) {
  char tmp[CLI_PATH + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f) return dt_error_set(DT_ERR_IO, "--csv %s: cannot write: %s", path, strerror(errno));
  eval_table_write_csv(t, ds, f);
  bool failed = fflush(f) != 0 || ferror(f);
  int e = errno;
  if (fclose(f) != 0) failed = true;
  if (failed || rename(tmp, path) != 0) {
    if (!failed) e = errno;
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "--csv %s: cannot write: %s", path, strerror(e));
  }
  return DT_OK;
}

static void eval_print(const eval_table *t, const dt_dataset *ds) {
  const int K = t->K;
  char buf[32];
  printf("\n%-6s %-20s %8s %9s %9s %9s\n", "class", "name", "images", "top1 %", "top5 %", "loss");
  for (int k = 0; k < K; k++) {
    double n = t->images[k];
    printf("%-6d %-20.20s %8.0f %9.2f %9.2f %9.4f\n", k, cli_class_name(ds, k, buf, sizeof buf), n,
           n > 0 ? 100.0 * t->top1[k] / n : NAN, n > 0 ? 100.0 * t->top5[k] / n : NAN,
           n > 0 ? t->loss[k] / n : NAN);
  }
  if (K > 20) {
    printf("\nconfusion matrix: %d classes, written by --csv only\n", K);
    return;
  }
  printf("\nconfusion matrix (rows: true class, columns: predicted class)\n%6s", "");
  for (int j = 0; j < K; j++) printf(" %6d", j);
  printf("\n");
  for (int k = 0; k < K; k++) {
    printf("%6d", k);
    for (int j = 0; j < K; j++) printf(" %6.0f", t->confusion[(size_t)k * K + j]);
    printf("\n");
  }
}

int dt_cli_eval(const char *target, const dt_cli_opts *o, dt_comm *comm) {
  const int rank = dt_comm_rank(comm), world = dt_comm_size(comm);
  h5_init();
  char ckpt[CLI_PATH];
  dt_config cfg;
  dt_config_defaults(&cfg);
  dt_status st = dt_ranks_agree(comm, cli_resolve(target, o, ckpt, &cfg));
  /* Another evaluation batch or split on some rank would count images twice or not at all. */
  if (st == DT_OK) st = dt_ranks_agree(comm, dt_ranks_same_config(comm, &cfg));
  if (st != DT_OK) {
    dt_config_free(&cfg);
    return cli_fail(comm, st);
  }
  char line[320];
  const int threads = dt_thread_plan_start(comm, &cfg, o->device, NULL, NULL, line, sizeof line);
  dt_dataset ds;
  st = dt_dataset_load_config(&ds, &cfg);
  if (st == DT_OK) dt_dataset_limit(&ds, (int)cfg.data_train_limit, (int)cfg.data_test_limit);
  /* Every rank evaluates its slices of the test split it loaded: the same split everywhere. */
  if (dt_ranks_agree(comm, st) == DT_OK) dt_ranks_same_dataset(comm, &cfg, &ds, &st);
  dt_predictor pr = {0};
  long epoch = 0, step = 0;
  if (st == DT_OK)
    st = dt_predictor_init(&pr, &cfg, o->device, threads, dt_comm_local_rank(comm),
                           dt_comm_local_size(comm), ds.train.channels, ds.train.height,
                           ds.train.width, ds.classes, ckpt, &epoch, &step);
  if (dt_ranks_agree(comm, st) != DT_OK) {
    if (st == DT_OK) dt_predictor_free(&pr);
    dt_dataset_free(&ds);
    dt_config_free(&cfg);
    return cli_fail(comm, st);
  }
  /* The test loader of training (trainer.c): the same global batch, the same slices. */
  dt_loader_cfg lc;
  dt_erase_cfg erase;
  dt_mix_cfg mix;
  dt_loader_cfg_from_config(&lc, &erase, &mix, &cfg, &ds);
  const int E = dt_eval_loader_cfg(&lc, cfg.train_eval_batch_size, ds.test.count, rank, world);
  dt_loader *ld = dt_loader_create(&lc);
  dt_evaluator ev;
  dt_evaluator_init(&ev, pr.model, pr.be, comm, ld, ds.classes, E / world);

  const int K = ds.classes;
  eval_table t = {.K = K};
  const size_t n_table = (size_t)4 * K + (size_t)K * K;
  t.images = dt_xcalloc(n_table, sizeof(double));
  t.top1 = t.images + K, t.top5 = t.top1 + K, t.loss = t.top5 + K, t.confusion = t.loss + K;
  const dt_eval_result r = dt_evaluate(&ev, eval_table_add, &t);
  dt_comm_allreduce_sum_f64(comm, t.images, n_table);
  int status = 0;
  if (rank == 0) {
    /* The counts of the table; the loss as training reports it. */
    double n = 0, c1 = 0, c5 = 0;
    for (int k = 0; k < K; k++) n += t.images[k], c1 += t.top1[k], c5 += t.top5[k];
    printf("eval: %s (epoch %ld, step %ld) on %s %s: %.0f test images, %d classes, %d rank(s), "
           "eval batch %d\n",
           ckpt, epoch, step, dt_data_dataset_str(cfg.data_dataset), dt_dataset_location(&cfg), n, K,
           world, E);
    printf("test loss %.4f top1 %.2f%% top5 %.2f%% (top1 %.0f/%.0f images, top5 %.0f/%.0f)\n",
           r.loss, r.top1, r.top5, c1, n, c5, n);
    eval_print(&t, &ds);
    fflush(stdout);
    if (o->csv_path && eval_write_csv(&t, &ds, o->csv_path) != DT_OK) {
      fprintf(stderr, "dtrain: %s\n", dt_error_message());
      status = 1;
    }
  }
  free(t.images);
  dt_evaluator_free(&ev);
  dt_loader_free(ld);
  dt_predictor_free(&pr);
  dt_dataset_free(&ds);
  dt_config_free(&cfg);
  return status;
}

/* Probabilities of one row of logits (softmax in double). */
static void cli_softmax(const float *z, int K, double *p) {
  double m = z[0], s = 0;
  for (int k = 1; k < K; k++) m = DT_MAX(m, (double)z[k]);
  for (int k = 0; k < K; k++) s += p[k] = exp((double)z[k] - m);
  for (int k = 0; k < K; k++) p[k] /= s;
}

/* The rows of --predict: one input file's images, its names, the top classes to print. */
typedef struct {
  const char *file;
  char **names; /* NULL: the file has none */
  const dt_dataset *ds;
  int top;
  double *p;  /* (K) scratch */
  int *order; /* (K) scratch */
} predict_out;

/* The sink of dt_evaluate: one CSV row per image of the batch. */
static void predict_rows(void *ctx, const dt_eval_batch *b) {
  predict_out *po = ctx;
  const int K = b->classes;
  double *p = po->p;
  int *order = po->order;
  char buf[32];
  for (int j = 0; j < b->n; j++) {
    const long at = b->first + j;
    cli_softmax(b->logits + (size_t)j * K, K, p);
    /* The top classes by probability, the lower class first on ties. */
    for (int k = 0; k < K; k++) order[k] = k;
    for (int r = 0; r < po->top; r++) {
      int best = r;
      for (int k = r + 1; k < K; k++)
        if (p[order[k]] > p[order[best]] ||
            (p[order[k]] == p[order[best]] && order[k] < order[best]))
          best = k;
      int tmp = order[r];
      order[r] = order[best];
      order[best] = tmp;
    }
    csv_field(stdout, po->file);
    printf(",%ld,", at);
    if (po->names) csv_field(stdout, po->names[at]);
    for (int r = 0; r < po->top; r++) {
      printf(",%d,", order[r]);
      csv_field(stdout, cli_class_name(po->ds, order[r], buf, sizeof buf));
      printf(",%.6f", p[order[r]]);
    }
    printf("\n");
  }
}

int dt_cli_predict(const char *checkpoint, const char *const *inputs, int n_inputs,
                   const dt_cli_opts *o, dt_comm *comm) {
  if (dt_comm_size(comm) > 1) {
    if (dt_comm_rank(comm) == 0)
      fprintf(stderr, "dtrain: --predict runs as one process (start it without mpirun)\n");
    return 1;
  }
  if (n_inputs < 1) {
    fprintf(stderr, "dtrain: --predict %s: give one or more image files (IMAGES.h5) to predict\n",
            checkpoint);
    return 1;
  }
  h5_init();
  char ckpt[CLI_PATH];
  dt_config cfg;
  dt_config_defaults(&cfg);
  dt_dataset ds = {0};
  dt_status st = cli_resolve(checkpoint, o, ckpt, &cfg);
  /* Classes, names, image shape and normalisation of the training data, without its pixels
   * (but with the class names) for a file. */
  if (st == DT_OK) st = dt_dataset_is_file(&cfg) ? dt_dataset_names_hdf5(cfg.data_path, &ds)
                                                 : dt_dataset_describe_config(&cfg, &ds);
  const int C = ds.train.channels, H = ds.train.height, W = ds.train.width, K = ds.classes;
  /* Every input is read and checked before anything is printed. */
  dt_split *splits = dt_xcalloc((size_t)n_inputs, sizeof *splits);
  char ***names = dt_xcalloc((size_t)n_inputs, sizeof *names);
  for (int i = 0; st == DT_OK && i < n_inputs; i++) {
    st = dt_images_load_hdf5(inputs[i], &splits[i], &names[i]);
    const dt_split *s = &splits[i];
    if (st == DT_OK && (s->channels != C || s->height != H || s->width != W))
      st = dt_error_set(DT_ERR_DATA,
                        "image file %s: images of %dx%dx%d (C x H x W), but the model of %s takes "
                        "%dx%dx%d: pack them with tools/dtrain_tools/pack_images.py "
                        "--predict-images ... --like DATASET.h5 (or --size %dx%d --mode %s) "
                        "--fit resize",
                        inputs[i], s->channels, s->height, s->width, ckpt, C, H, W, H, W,
                        C == 1 ? "L" : "RGB");
  }
  char line[320];
  const int threads = st == DT_OK ? dt_thread_plan_start(comm, &cfg, o->device, NULL, NULL, line, sizeof line) : 0;
  dt_predictor pr = {0};
  long epoch = 0, step = 0;
  if (st == DT_OK)
    st = dt_predictor_init(&pr, &cfg, o->device, threads, dt_comm_local_rank(comm),
                           dt_comm_local_size(comm), C, H, W, K, ckpt, &epoch, &step);
  int status = 0;
  if (st != DT_OK) {
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
    status = 1;
  } else {
    const int top = DT_MIN(o->top, K);
    printf("file,index,image");
    for (int r = 1; r <= top; r++) printf(",class_%d,name_%d,probability_%d", r, r, r);
    printf("\n");
    predict_out po = {.ds = &ds, .top = top};
    po.p = dt_xmalloc((size_t)K * sizeof(double));
    po.order = dt_xmalloc((size_t)K * sizeof(int));
    for (int i = 0; i < n_inputs; i++) {
      /* The test-split normalisation of the training data, through the evaluation loader, its
       * batches those of one rank's evaluation of this file. */
      dt_dataset one = ds;
      one.test = splits[i];
      one.train = splits[i];
      dt_loader_cfg lc;
      dt_erase_cfg erase;
      dt_mix_cfg mix;
      dt_loader_cfg_from_config(&lc, &erase, &mix, &cfg, &one);
      const int E = dt_eval_loader_cfg(&lc, cfg.train_eval_batch_size, splits[i].count, 0, 1);
      dt_loader *ld = dt_loader_create(&lc);
      dt_evaluator ev;
      dt_evaluator_init(&ev, pr.model, pr.be, comm, ld, K, E);
      po.file = inputs[i];
      po.names = names[i];
      dt_evaluate(&ev, predict_rows, &po); /* the loss is of label 0: unused */
      dt_evaluator_free(&ev);
      dt_loader_free(ld);
    }
    free(po.p);
    free(po.order);
    dt_predictor_free(&pr);
  }
  for (int i = 0; i < n_inputs; i++) {
    free(splits[i].images);
    free(splits[i].labels);
    for (int j = 0; names[i] && j < splits[i].count; j++) free(names[i][j]);
    free(names[i]);
  }
  free(splits);
  free(names);
  dt_dataset_free(&ds);
  dt_config_free(&cfg);
  return status;
}
