import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django.setup(set_prefix=False)

from config.handlers import OzWSGIHandler  # noqa: E402  (needs the settings configured above)

application = OzWSGIHandler()
