"""ini: reading dtrain's .ini files (config.ini, a run's config) as {section.key: value}, shared by
the modules that read configurations (results, torch_train). Not a task: no main(argv)."""
import configparser


def read_ini(path, error):
    """{section.key: value} of an .ini file in dtrain's syntax (; and # comments); a file that
    cannot be opened or parsed raises error (the caller's exception class) with one message."""
    cp = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"),
                                   inline_comment_prefixes=None, strict=False)
    try:
        with open(path) as f:
            cp.read_file(f)
    except (OSError, configparser.Error) as e:
        raise error("%s: cannot read it (%s)" % (path, e))
    return {"%s.%s" % (s, k): v.strip() for s in cp.sections() for k, v in cp[s].items()}
