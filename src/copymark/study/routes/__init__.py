"""The study app's routes, one APIRouter module per part: entry (consent, optional questions),
rating (instructions, the pages to rate, completion, images), admin, health."""
