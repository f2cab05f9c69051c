/* loader_options.c: the data layer's plain options from the configuration (loader_options.h). */
#include "loader_options.h"

#include <string.h>

void dt_loader_cfg_from_config(dt_loader_cfg *lc, dt_erase_cfg *erase, dt_mix_cfg *mix,
                               const dt_config *cfg, const dt_dataset *ds) {
  memset(lc, 0, sizeof *lc);
  memset(erase, 0, sizeof *erase);
  memset(mix, 0, sizeof *mix);
  lc->ds = ds;
  lc->train = true;
  lc->aug.random_crop = cfg->augment_random_crop != DT_AUGMENT_RANDOM_CROP_FALSE; /* auto: on */
  lc->aug.crop_padding = (int)cfg->augment_crop_padding;
  switch (cfg->augment_hflip) {
    case DT_AUGMENT_HFLIP_AUTO: lc->aug.hflip = ds->default_hflip; break;
    case DT_AUGMENT_HFLIP_TRUE: lc->aug.hflip = true; break;
    case DT_AUGMENT_HFLIP_FALSE: lc->aug.hflip = false; break;
  }
  lc->aug.hflip_prob = (float)cfg->augment_hflip_prob;
  lc->seed = (uint64_t)cfg->train_seed;
  lc->global_batch = lc->slice_count = (int)cfg->train_batch_size;
  lc->slice_offset = 0;
  lc->threads = (int)cfg->data_loader_threads;
  dt_erase_cfg *e = erase;
  e->cutout = cfg->augment_cutout;
  e->random_erasing = cfg->augment_random_erasing;
  e->dual_cutout = cfg->augment_dual_cutout;
  e->cutout_prob = cfg->augment_cutout_prob;
  e->cutout_size = (int)cfg->augment_cutout_size;
  e->cutout_inside = cfg->augment_cutout_inside;
  e->erasing_prob = cfg->augment_erasing_prob;
  e->erasing_area_min = cfg->augment_erasing_area_min;
  e->erasing_area_max = cfg->augment_erasing_area_max;
  e->erasing_min_aspect = cfg->augment_erasing_min_aspect;
  e->erasing_max_attempts = (int)cfg->augment_erasing_max_attempts;
  /* The config check allows at most one; the order is the reference priority all the same. */
  dt_mix_cfg *m = mix;
  if (cfg->augment_mixup)
    m->kind = DT_MIX_MIXUP, m->alpha = cfg->augment_mixup_alpha;
  else if (cfg->augment_ricap)
    m->kind = DT_MIX_RICAP, m->alpha = cfg->augment_ricap_beta;
  else if (cfg->augment_cutmix)
    m->kind = DT_MIX_CUTMIX, m->alpha = cfg->augment_cutmix_alpha;
  else
    m->label_smoothing = cfg->augment_label_smoothing;
}

bool dt_dataset_is_file(const dt_config *cfg) { return cfg->data_dataset == DT_DATA_DATASET_HDF5; }

const char *dt_dataset_location(const dt_config *cfg) {
  if (dt_dataset_is_file(cfg)) return cfg->data_path;
  return cfg->data_dir[0] ? cfg->data_dir
                          : dt_dataset_default_dir(dt_data_dataset_str(cfg->data_dataset));
}

dt_status dt_dataset_describe_config(const dt_config *cfg, dt_dataset *ds) {
  if (dt_dataset_is_file(cfg)) return dt_dataset_describe_hdf5(cfg->data_path, ds);
  return dt_dataset_describe(dt_data_dataset_str(cfg->data_dataset), ds);
}

dt_status dt_dataset_load_config(dt_dataset *ds, const dt_config *cfg) {
  if (dt_dataset_is_file(cfg)) return dt_dataset_load_hdf5(ds, cfg->data_path);
  return dt_dataset_load(ds, dt_data_dataset_str(cfg->data_dataset), cfg->data_dir);
}
