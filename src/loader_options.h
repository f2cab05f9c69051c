/* loader_options.h: the configuration turned into the data layer's plain options. src/data/
 * takes only those structs (dt_loader_cfg, dt_erase_cfg, dt_mix_cfg) and never sees the
 * dt_config; this is the one place that maps [augment], [train] and [data] onto them. */
#ifndef DT_LOADER_OPTIONS_H
#define DT_LOADER_OPTIONS_H

#include "config.h"
#include "data/loader.h"

/* The training loader of `cfg` for one process holding the whole global batch (slice 0..B): crop
 * and flip (auto = the dataset's default, docs/reference-experiments.md "Code generations"),
 * erasing, mixing and label smoothing from [augment], batch, seed and threads from [train] and
 * [data]. A rank then narrows the slice. Pass the three to dt_loader_create_train. */
void dt_loader_cfg_from_config(dt_loader_cfg *lc, dt_erase_cfg *erase, dt_mix_cfg *mix,
                               const dt_config *cfg, const dt_dataset *ds);

/* The dataset of a configuration: data.dataset with data.dir, or the file data.path
 * (data.dataset = hdf5). */
bool dt_dataset_is_file(const dt_config *cfg);
dt_status dt_dataset_describe_config(const dt_config *cfg, dt_dataset *ds);
dt_status dt_dataset_load_config(dt_dataset *ds, const dt_config *cfg);
/* Where the data comes from, for messages: data.path, data.dir or the default directory. */
const char *dt_dataset_location(const dt_config *cfg);

#endif
