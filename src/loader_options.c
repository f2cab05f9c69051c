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
