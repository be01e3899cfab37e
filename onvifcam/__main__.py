"""``python -m onvifcam``."""

import sys

from onvifcam.cli import main

sys.exit(main())
