"""copymark: intellectual-property security of image models.

Two jobs share one core: extraction (steal an image-translation model through its API and
measure the copy) and protection (prove ownership of a classifier with blind watermarks and
attack that proof). See the README and DESIGN.md for the layout.
"""

__version__ = "0.1.0"
