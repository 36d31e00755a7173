import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django.setup(set_prefix=False)

from config.handlers import OzWSGIHandler  # noqa: E402  (needs the settings configured above)

application = OzWSGIHandler()


def _freeze_what_is_loaded() -> None:
    """Take the objects a web process loads once (Django, the views and everything they
    import, scikit-learn and numpy: about 230,000 objects) out of the cyclic garbage collector's
    sight. Each full collection walked all of them with the GIL held: 40–170 ms, every
    request of the worker waiting meanwhile, the main cause of /predict's p99. Frozen, a full
    collection under load takes 7–15 ms. They live as long as the process anyway; what a
    request makes is still collected as before."""
    import gc
    import importlib

    from django.conf import settings

    importlib.import_module(settings.ROOT_URLCONF)  # what the first request would import
    gc.collect()
    gc.freeze()


_freeze_what_is_loaded()
