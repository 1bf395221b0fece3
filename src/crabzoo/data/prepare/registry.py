"""The 19 task folders of AV-UIE v2 and the layout facts of the source dataset each one is prepared from.

Layouts marked *unconfirmed* in ``docs/preparing-datasets.md`` (MER2024, MAFW, DFEW, UnAV-100, VALOR) follow the
most common distribution of those datasets; their folders are searched recursively, so a different nesting below
the named folder still works.
"""

from __future__ import annotations

import copy

from crabzoo.data.prepare.avsbench import AVSBenchLayouts, AVSBenchRelease
from crabzoo.data.prepare.base import Catalogue, Preparer
from crabzoo.data.prepare.frames import FrameSource
from crabzoo.data.prepare.video import VideoSource
from crabzoo.errors import CrabzooError

YOUTUBE = "dead YouTube ids: clips removed from YouTube since the dataset was collected cannot be downloaded"
LICENCE = "licence request: the media are given out only after signing the dataset's end-user licence agreement"

AVSBENCH_FRAMES = (
    "AVSBench (original release): the frames are the release's 224 x 224 PNGs, linked under the records' .jpg names; "
    "a clip without frames gets them extracted from raw_videos (15/16 of the way through each second, as the "
    "release did), a clip with neither is reported")


def _avsbench(task: str, part: str, folder: str, semantic_gap: str, original_gap: str) -> AVSBenchLayouts:
    """s4 / ms3: AVSBench-semantic's ``<folder>/`` or the original release, whichever ``--src`` holds."""
    semantic = FrameSource(task=task, dataset=f"AVSBench-semantic ({part}, {folder})", prefix="AVS",
                           required=(folder,), catalogue=Catalogue("metadata.csv", "csv", "{uid}"),
                           gaps=(semantic_gap,))
    original = AVSBenchRelease(task=task, dataset=f"AVSBench (original release, {part})",
                               gaps=(original_gap, AVSBENCH_FRAMES))
    return AVSBenchLayouts(semantic, original)


VGGSOUND = dict(
    dataset="VGGSound", video_dirs={"": ("video", "videos")}, segment_seconds=10.0,
    catalogue=Catalogue("vggsound.csv", "csv-noheader", "{0}_{1}"),
    gaps=(f"VGGSound: {YOUTUBE}",),
)

PREPARERS: dict[str, Preparer] = {
    "a2v": VideoSource(task="a2v", video_fields=("video1_path", "video2_path"), **VGGSOUND),
    "v2a": VideoSource(task="v2a", audio_fields=("audio1_path", "audio2_path"), **VGGSOUND),
    "ks": VideoSource(
        task="ks", dataset="Kinetics-Sounds", video_dirs={"": ("train", "val", "test")}, segment_seconds=10.0,
        catalogue=Catalogue("annotations/*.csv", "csv", "{youtube_id}_{time_start}"),
        gaps=(f"Kinetics-400 (Kinetics-Sounds is a subset of its classes): {YOUTUBE}",)),
    "ucf": VideoSource(
        task="ucf", dataset="UCF101", video_dirs={"": ("UCF-101",)}, required=("UCF-101",),
        catalogue=Catalogue("ucfTrainTestlist/*list0*.txt", "list", "", required=False),
        gaps=("UCF101: only about half of the 101 classes have a soundtrack; clips without one are listed as "
              "unreadable audio",)),
    "meld": VideoSource(
        task="meld", dataset="MELD",
        video_dirs={"train": ("train_splits", "dev_splits_complete"), "test": ("output_repeated_splits_test",),
                    "": ("train_splits", "dev_splits_complete", "output_repeated_splits_test")},
        catalogue=Catalogue("*_sent_emo.csv", "csv", "dia{Dialogue_ID}_utt{Utterance_ID}"),
        gaps=("MELD: a few utterances listed in the CSVs have no clip in the archive, the report names them",)),
    "mer24": VideoSource(
        task="mer24", dataset="MER2024", video_dirs={"": ("video", "videos")}, audio_dirs={},
        gaps=(f"MER2024: {LICENCE}", "MER2024: layout unconfirmed (clips searched below video/)")),
    "cremad": VideoSource(
        task="cremad", dataset="CREMA-D", video_dirs={"": ("VideoFlash",)}, audio_dirs={"": ("AudioWAV",)},
        required=("VideoFlash", "AudioWAV"),
        gaps=("CREMA-D: the videos are Flash (.flv) and are re-encoded to MP4; a few files of the public copy are "
              "empty or truncated, the report names them",)),
    "mafw": VideoSource(
        task="mafw", dataset="MAFW", video_dirs={"": ("data/clips", "clips")},
        gaps=(f"MAFW: {LICENCE}", "MAFW: layout unconfirmed (clips searched below data/clips/)")),
    "dfew": VideoSource(
        task="dfew", dataset="DFEW", video_dirs={"": ("Clip/original", "clips", "videos")},
        gaps=(f"DFEW: {LICENCE}", "DFEW: layout unconfirmed (clips searched below Clip/original/)")),
    "avqa": VideoSource(
        task="avqa", dataset="MUSIC-AVQA",
        video_dirs={"": ("MUSIC-AVQA-videos-Real", "MUSIC-AVQA-videos-Synthetic", "videos")},
        catalogue=Catalogue("**/avqa-*.json", "json-list", "{video_id}"),
        gaps=("MUSIC-AVQA: the audio windows assume 60-s clips; shorter clips are padded by the task policy",)),
    "avqa_thu": VideoSource(
        task="avqa_thu", dataset="AVQA (Tsinghua)", video_dirs={"": ("videos", "video")}, key_field="video_name",
        segment_seconds=10.0, catalogue=Catalogue("*_qa.json", "json-list", "{video_name}"),
        gaps=(f"AVQA: the videos come from VGGSound; {YOUTUBE}",)),
    "ave": VideoSource(
        task="ave", dataset="AVE", video_dirs={"": ("AVE",)}, required=("AVE",),
        catalogue=Catalogue("Annotations.txt", "csv", "{VideoID}"),
        gaps=(f"AVE: {YOUTUBE} (the official archive ships the 4143 clips, mirrors may lack some)",)),
    "unav": VideoSource(
        task="unav", dataset="UnAV-100", video_dirs={"": ("videos", "video")},
        catalogue=Catalogue("**/unav100_annotations.json", "json-keys", "database", required=False),
        gaps=(f"UnAV-100: {YOUTUBE}", "UnAV-100: annotation file name unconfirmed")),
    "avvp": VideoSource(
        task="avvp", dataset="LLP (AVVP)", video_dirs={"": ("LLP_dataset/video", "video", "videos")},
        key_field="filename", segment_seconds=10.0, catalogue=Catalogue("**/AVVP_*.csv", "csv", "{filename}"),
        gaps=("LLP: the official release ships features only; the raw videos are downloaded from YouTube by id, "
              f"so {YOUTUBE}",)),
    "avcap": VideoSource(
        task="avcap", dataset="VALOR-32K", video_dirs={"": ("videos", "video")},
        catalogue=Catalogue("**/desc_*.json", "json-list", "{video_id}", required=False),
        gaps=(f"VALOR-32K: the clips come from AudioSet; {YOUTUBE}", "VALOR-32K: layout unconfirmed")),
    "s4": _avsbench(
        "s4", "S4", "v1s",
        semantic_gap="AVSBench-S4: train clips are annotated on their first frame only; test records need labels_rgb "
                     "for all 5 frames, the report names any that are missing",
        original_gap="AVSBench-S4: train clips are annotated on their first frame only (gt_masks <name>_1.png); "
                     "test records need all 5 masks, the report names any that are missing"),
    "ms3": _avsbench(
        "ms3", "MS3", "v1m",
        semantic_gap="AVSBench-MS3: test records need labels_rgb for all 5 frames, the report names any that are "
                     "missing",
        original_gap="AVSBench-MS3: test records need gt_masks for all 5 frames, the report names any that are "
                     "missing"),
    "arig": FrameSource(
        task="arig", dataset="AVSBench-semantic (S4, v1s)", prefix="AVS", required=("v1s",), masks=False,
        catalogue=Catalogue("metadata.csv", "csv", "{uid}"),
        gaps=("arig shares the AVSBench-S4 media of s4: the files are linked, not copied",)),
    "ref_avs": FrameSource(
        task="ref_avs", dataset="Ref-AVS Bench", prefix="REFAVS", required=("media", "gt_mask"),
        gaps=("Ref-AVS: test_n (null) records refer to absent objects; their masks are empty, not missing",)),
}
"""Preparer of each AV-UIE v2 task folder."""


def get_preparer(name: str) -> Preparer:
    """The preparer of a task folder.

    Raises:
        CrabzooError: unknown name (the message lists the 19).
    """
    if name not in PREPARERS:
        raise CrabzooError(f"no preparer named {name!r}; choose one of: {', '.join(PREPARERS)}")
    return copy.deepcopy(PREPARERS[name])  # a fresh one: scanning a source fills its index
