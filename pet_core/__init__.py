"""petflow's ML library: PET/iPET on any Hugging Face masked LM, with no orchestrator inside.

Stages are plain functions (``pet_core.stages``) over content-addressed artifacts; the lower-level
pieces (``train_pvp``, ``score``, ``merge``, ``next_generation``, ``distill``) work on tables directly.
"""

__version__ = "0.1.0"
