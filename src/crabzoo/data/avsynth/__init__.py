"""AVSynth: crabzoo's embedded, procedural audio-visual benchmark in the AV-UIE v2 layout.

``synthesize(out, clips, seed)`` writes ``<out>/AVUIE_2/<task>/{train,test}.json`` plus real media (MP4, WAV,
JPG, PNG); ``ensure_avsynth`` does so only when no dataset with the same options is there yet. See
``docs/avsynth.md`` for the world, the tasks and their chance levels.
"""

from crabzoo.data.avsynth.tasks import AVSYNTH_TASKS
from crabzoo.data.avsynth.world import CATEGORIES, EMOTIONS, KS_ACTIONS, UCF_ACTIONS, Knobs
from crabzoo.data.avsynth.writer import ensure_avsynth, read_manifest, synthesize

__all__ = [
    "AVSYNTH_TASKS",
    "CATEGORIES",
    "EMOTIONS",
    "KS_ACTIONS",
    "UCF_ACTIONS",
    "Knobs",
    "ensure_avsynth",
    "read_manifest",
    "synthesize",
]
