"""Anatomical post-processing of a predicted multiclass mask: levels must follow each other from cranial to caudal.

The steps, run in this order by :func:`tidy_levels`:

- A connected part labelled with a level that lies on the wrong side of other levels' main parts (a "T12" below L5,
  as stage 2 labels the unannotated sacrum on some real scans) cannot be that level; a level's main part is its
  largest, where that is body-sized (a level found only in specks orders nothing); such parts are taken out, most
  contradicted first, until every remaining part agrees with the order of the others' main parts. A part taken out
  that is the smaller piece of one body with a level's main part it touches (the lower part of L5 named "S2") gets
  that level; the others are removed.
- A chain of bodies (connected parts, taken apart where a bridge a voxel or two thick joins two bodies across the
  disc, where a part narrows to a waist between two sides each about a body tall, or where one part holds two levels
  far apart) that names one level twice (S1 too, where its two bodies lie a
  disc apart: the sacrum's segments are fused), or skips one above S1, is counted again from the sacrum
  upward (:func:`count_levels_from_sacrum`); one that names a level twice without a sacral body at its caudal end
  is counted up from the level stage 1 gives its caudal body, where stage 1's mask is given
  (:func:`count_levels_from_stage1`), or else named by the run of consecutive levels its voxels voted for most
  (:func:`count_levels_by_votes`).
- Every body gets one level, the level of most of its voxels, where the other levels' voxels lie near its centre
  (:func:`one_level_per_body`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from measure.io import foreground_box
from measure.levels import is_known_level, is_optional_level, is_sacral_level, level_order, level_rank

from .roi import superior_array_axis

ORDER_TOLERANCE_MM = 10.0
"""A part contradicts another level only when it is more than this beyond that level's main part (centroids along
superior-inferior; adjacent bodies are about 30-40 mm apart)."""


@dataclass
class _Part:
    value: int
    index: int  # component number in ndimage.label's output for this value
    voxels: int
    superior_mm: float  # centroid along the patient's superior axis


def _position_mm(centroid_kji: Sequence[float], spacing_xyz: Sequence[float], direction: Sequence[float]
                 ) -> np.ndarray:
    """Physical position (LPS, mm, relative to the origin) of an array index (k, j, i)."""
    scaled = np.asarray(spacing_xyz, float) * np.asarray(centroid_kji, float)[::-1]
    return np.asarray(direction, float).reshape(3, 3) @ scaled


def _superior_mm(centroid_kji: Sequence[float], spacing_xyz: Sequence[float], direction: Sequence[float]) -> float:
    """Superior coordinate (LPS z, mm, relative to the origin) of an array index (k, j, i)."""
    return float(_position_mm(centroid_kji, spacing_xyz, direction)[2])


def _level_values(labels_kji: np.ndarray, level_of_value: Mapping[int, str]) -> list[int]:
    """The mask's values that name a known level."""
    return [int(v) for v in np.unique(labels_kji) if v and is_known_level(level_of_value.get(int(v), ""))]


def _parts(labels_kji: np.ndarray, values: Sequence[int], spacing_xyz, direction, offset_kji: Sequence[int]
           ) -> tuple[list[_Part], dict]:
    """Connected parts of each value (in a sub-array starting at ``offset_kji`` of the whole mask)."""
    parts, components = [], {}
    for value in values:
        component, count = ndimage.label(labels_kji == value)
        components[value] = component
        indices = list(range(1, count + 1))
        sizes = np.bincount(component.ravel(), minlength=count + 1)[1:]
        centres = ndimage.center_of_mass(component > 0, component, indices)
        parts += [_Part(value, n, int(size), _superior_mm(np.add(centre, offset_kji), spacing_xyz, direction))
                  for n, size, centre in zip(indices, sizes, centres, strict=True)]
    return parts, components


def _body_sized(part: _Part, level: str, largest_voxels: int) -> bool:
    """Whether a level's largest part is large enough to stand for its body in the cranio-caudal order: as
    :func:`_bodies` counts bodies, at least :data:`MIN_BODY_FRACTION` of the largest part of any level
    (``largest_voxels``; :data:`SACRAL_MIN_FRACTION` for a sacral level). A level found only in specks has no body
    to order the others by: a four-voxel "S2" between two bodies named L5 must not take the lower one out."""
    return part.voxels >= (SACRAL_MIN_FRACTION if is_sacral_level(level) else MIN_BODY_FRACTION) * largest_voxels


def remove_out_of_order_parts(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz: Sequence[float],
                              direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
                              tolerance_mm: float = ORDER_TOLERANCE_MM) -> tuple[np.ndarray, list[str]]:
    """``labels_kji`` (array order, values -> level names by ``level_of_value``; spacing in mm and direction cosines
    in ITK order) without the parts whose level contradicts the cranio-caudal order (each given the level of the
    body it belongs to where it is part of one, :func:`_host_level`, else removed); and their notes. Values without
    a known level name are left alone."""
    values = _level_values(labels_kji, level_of_value)
    if len(values) < 2:
        return labels_kji, []
    box = foreground_box(labels_kji)  # labelling the parts only in the labelled box is the same, and faster
    parts, components = _parts(labels_kji[box], values, spacing_xyz, direction, [b.start for b in box])
    rank = {v: level_rank(level_of_value[v]) for v in values}

    def main_parts() -> dict[int, _Part]:
        largest: dict[int, _Part] = {}
        for part in parts:
            if part.value not in largest or part.voxels > largest[part.value].voxels:
                largest[part.value] = part
        overall = max((part.voxels for part in largest.values()), default=0)
        return {value: part for value, part in largest.items() if _body_sized(part, level_of_value[value], overall)}

    def contradictions(part: _Part, mains: dict[int, _Part]) -> int:
        count = 0
        for value, main in mains.items():
            if value == part.value:
                continue
            below = main.superior_mm < part.superior_mm - tolerance_mm  # the other level's body lies caudal
            above = main.superior_mm > part.superior_mm + tolerance_mm
            count += (rank[value] < rank[part.value] and below) or (rank[value] > rank[part.value] and above)
        return count

    removed: list[_Part] = []
    while True:
        mains = main_parts()
        main_ids = {id(part) for part in mains.values()}
        scores = [contradictions(part, mains) for part in parts]
        if max(scores, default=0) == 0:
            break
        worst_main = max((s for s, part in zip(scores, parts, strict=True) if id(part) in main_ids), default=0)
        # parts that are not their level's main part do not change the main parts: every one at least as
        # contradicted as the worst main part would go before it (smaller first), so they go together
        batch = [n for n, (s, part) in enumerate(zip(scores, parts, strict=True))
                 if s > 0 and s >= worst_main and id(part) not in main_ids]
        if not batch:
            batch = [max(range(len(parts)), key=lambda n: (scores[n], -parts[n].voxels))]
        for n in sorted(batch, reverse=True):
            removed.append(parts.pop(n))
    if not removed:
        return labels_kji, []
    cleaned = labels_kji.copy()
    inside = cleaned[box]
    for value in {part.value for part in removed}:
        indices = [part.index for part in removed if part.value == value]
        inside[np.isin(components[value], indices)] = 0
    bulks = {(part.value, part.index): part for part in main_parts().values()}  # each kept level's main part
    part_boxes = {value: ndimage.find_objects(components[value]) for value in {part.value for part in removed}}
    hosts: dict[int, int] = {}  # id of a part taken out -> the level it is given
    for part in removed:
        host = _host_level(inside, part, part_boxes[part.value][part.index - 1], components, bulks)
        if host is not None:
            hosts[id(part)] = host
    for part in removed:  # after every choice: a part given a level is never another's host
        if id(part) in hosts:
            where = part_boxes[part.value][part.index - 1]
            inside[where][components[part.value][where] == part.index] = hosts[id(part)]
    notes = []
    for value in sorted({part.value for part in removed}, key=rank.get):
        given = [part for part in removed if part.value == value and id(part) in hosts]
        gone = [part for part in removed if part.value == value and id(part) not in hosts]
        if given:
            names = " ".join(sorted({level_of_value[hosts[id(p)]] for p in given}, key=level_rank))
            notes.append(f"{level_of_value[value]}: {len(given)} part(s) of {sum(p.voxels for p in given)} voxels out "
                         f"of cranio-caudal order given the level of the body they belong to ({names})")
        if gone:
            notes.append(f"{level_of_value[value]}: {len(gone)} part(s) of {sum(p.voxels for p in gone)} voxels "
                         "removed (out of cranio-caudal order with the other levels)")
    return cleaned, notes


def _host_level(labels_kji: np.ndarray, part: _Part, part_box: tuple[slice, ...], components: Mapping[int, np.ndarray],
                bulks: Mapping[tuple[int, int], _Part]) -> int | None:
    """The level of the body a part out of order belongs to: of the levels' main parts it touches that are larger
    than it and whose centre lies within :data:`SPLIT_MM` of its own along superior-inferior (the bulk of the same
    body, as :func:`_bodies` tells one body from two), the one it touches most (the nearer on a tie). A short
    training's stage 2 sometimes names the lower part of L5 "S2", and that part is L5, not background. None when it
    touches no such part (a piece of sacrum grown onto L5 across the disc; a body-sized part, which is a body of
    its own). ``part_box``: the part's bounding box (``ndimage.find_objects``), searched one voxel beyond."""
    box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in part_box)
    voxels = components[part.value][box] == part.index
    ring = ndimage.binary_dilation(voxels) & ~voxels
    around = labels_kji[box][ring]
    contact: dict[tuple[int, int], int] = {}
    for value in (int(v) for v in np.unique(around) if int(v) in components):
        indices, counts = np.unique(components[value][box][ring][around == value], return_counts=True)
        contact.update({(value, int(index)): int(count) for index, count in zip(indices, counts, strict=True)
                        if (value, int(index)) in bulks and bulks[(value, int(index))].voxels > part.voxels
                        and abs(bulks[(value, int(index))].superior_mm - part.superior_mm) <= SPLIT_MM})
    if not contact:
        return None
    return max(contact, key=lambda key: (contact[key], -abs(bulks[key].superior_mm - part.superior_mm)))[0]


SPLIT_MM = 15.0
"""Two levels inside one connected part are two bodies (grown together across a thin disc) when their centroids lie
more than this apart along superior-inferior (about half a lumbar body height)."""

BODY_WIDTH_MM = 40.0
"""Pieces of one level count as one body only when their centres lie within this of each other (about a lumbar body's
width: the pieces of a sacrum or of a body, not a false positive beside the spine at the same height)."""

MIN_BODY_FRACTION = 0.2
"""Bodies smaller than this fraction of the largest one (islands, slivers) do not count; a level's pieces at one
height are joined first (:func:`_fragments_joined`)."""

SACRAL_MIN_FRACTION = 0.05
"""A sacral body (S1, S2) caudal of every body that counts still counts from this fraction of the largest body on:
few training cases annotate the sacrum, and stage 2 often finds it only in part (a tenth of a lumbar body), yet it is
the landmark a chain that skips a level is counted from (:func:`count_levels_from_sacrum`)."""


@dataclass
class _Body:
    mask: np.ndarray  # boolean, on the sub-array ``box``
    voxels: int
    superior_mm: float
    level: str  # the level of most of its voxels
    position_mm: np.ndarray  # centroid (LPS, mm, relative to the origin)


def _bodies(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz, direction,
            offset_kji: Sequence[int]) -> list[_Body]:
    """The vertebral bodies of a labelled sub-array (cranial first): connected parts of the labelled voxels, split
    where a thin bridge joins two bodies (:func:`_split_at_thin_bridges`), at a waist between two sides each about a
    body tall (:func:`_split_at_waists`) and by level where its levels lie more than
    :data:`SPLIT_MM` apart (:func:`_level_pieces`), separate parts of one level at one height
    joined, bodies below :data:`MIN_BODY_FRACTION` of the largest left out (a sacral body caudal of the others from
    :data:`SACRAL_MIN_FRACTION` on)."""
    labelled = np.isin(labels_kji, _known_level_values(level_of_value))
    component, count = ndimage.label(labelled)
    bodies = []
    for index, box in enumerate(ndimage.find_objects(component), start=1):
        origin_kji = np.add([b.start for b in box], offset_kji)
        for part in _split_at_thin_bridges(component[box] == index, origin_kji, spacing_xyz, direction):
            for piece in _split_at_waists(part, spacing_xyz, direction):
                bodies += _level_pieces(piece, box, origin_kji, labels_kji, level_of_value, spacing_xyz, direction)
    bodies = _fragments_joined(bodies)
    largest = max((body.voxels for body in bodies), default=0)
    kept = [body for body in bodies if body.voxels >= MIN_BODY_FRACTION * largest]
    lowest = min((body.superior_mm for body in kept), default=np.inf)
    kept += [body for body in bodies if is_sacral_level(body.level) and body.superior_mm < lowest
             and SACRAL_MIN_FRACTION * largest <= body.voxels < MIN_BODY_FRACTION * largest]
    return sorted(kept, key=lambda body: -body.superior_mm)


def _split_at_thin_bridges(part: np.ndarray, origin_kji: Sequence[float], spacing_xyz: Sequence[float],
                           direction: Sequence[float]) -> list[np.ndarray]:
    """A connected part (boolean, on its box, whose first voxel is ``origin_kji`` of the image) as the bodies it
    holds: where taking off its surface voxels once (face neighbours) leaves two or more cores of body size
    (:data:`MIN_BODY_FRACTION` of the largest core), each voxel goes to the nearest core (distances in mm), and the
    pieces whose centres lie more than :data:`SPLIT_MM` apart along superior-inferior are separate bodies (nearer
    ones stay together); else the part whole. Two bodies joined across the disc by a bridge one or two voxels thick
    (voxels, not mm) are two bodies, whatever their labels say; a body with a thin waist, or a thicker bridge, stays
    one part (:func:`_split_at_waists` and the level split of :func:`_level_pieces` then decide)."""
    core, count = ndimage.label(ndimage.binary_erosion(part, ndimage.generate_binary_structure(3, 1)))
    if count < 2:
        return [part]
    sizes = np.bincount(core.ravel())[1:]
    seeds = np.flatnonzero(sizes >= MIN_BODY_FRACTION * sizes.max()) + 1
    if len(seeds) < 2:
        return [part]
    seeded = np.where(np.isin(core, seeds), core, 0)
    nearest = ndimage.distance_transform_edt(seeded == 0, sampling=tuple(float(s) for s in reversed(spacing_xyz)),
                                             return_distances=False, return_indices=True)
    owner = seeded[tuple(nearest)]
    pieces = [part & (owner == seed) for seed in seeds]
    centres = [_piece_superior_mm(piece, origin_kji, spacing_xyz, direction) for piece in pieces]
    order = np.argsort(centres)[::-1]  # cranial first
    bodies = [pieces[order[0]]]
    for above, below in zip(order[:-1], order[1:], strict=True):
        if centres[above] - centres[below] > SPLIT_MM:
            bodies.append(pieces[below])
        else:
            bodies[-1] = bodies[-1] | pieces[below]
    return bodies


WAIST_FRACTION = 0.25
"""A part is two bodies grown together across the disc where its cross-section (perpendicular to the array axis
closest to superior-inferior) narrows to at most this fraction of the larger cross-section of each side
(:func:`_split_at_waists`)."""

WAIST_LOBE_MM = 20.0
"""... and each side is at least this tall: about two thirds of a lumbar body's height (25-30 mm), so that a body
stage 2 found in two halves is not taken for two."""


def _split_at_waists(part: np.ndarray, spacing_xyz: Sequence[float], direction: Sequence[float]
                     ) -> list[np.ndarray]:
    """A part (boolean, on its box) as the bodies it holds along superior-inferior: where its cross-section (across
    the array axis closest to superior-inferior) narrows to at most :data:`WAIST_FRACTION` of the largest
    cross-section on each side, both sides at least :data:`WAIST_LOBE_MM` tall, it is cut at the narrowest such
    section (the middle one of equally narrow ones; it stays with the side of lower array index) and each side is
    looked at again; else the part whole.
    Two bodies joined across the disc by a bridge too thick for :func:`_split_at_thin_bridges` (a stage 2 that
    called the disc between them vertebra in the middle slices) are two bodies, whatever their labels say: counted
    as one, they shift the count of every level on one side of them (docs/benchmarks.md, "Thirty-ninth session")."""
    axis = superior_array_axis(direction)
    lobe = int(np.ceil(WAIST_LOBE_MM / float(spacing_xyz[2 - axis])))
    area = part.sum(axis=tuple(a for a in range(3) if a != axis))
    present = np.flatnonzero(area)
    if not len(present):
        return [part]
    first, last = int(present[0]), int(present[-1])
    candidates = np.arange(first + lobe, last - lobe + 1)  # below: [first, index), above: (index, last], >= lobe
    ratios = np.array([area[index] / min(area[first:index].max(), area[index + 1:last + 1].max())
                       for index in candidates])
    if not len(ratios) or ratios.min() > WAIST_FRACTION:
        return [part]
    narrowest = candidates[ratios <= ratios.min() * (1 + 1e-9)]
    waist = int(narrowest[len(narrowest) // 2])  # the middle one of equally narrow sections (a flat bridge)
    position = np.arange(part.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
    return [piece for side in (part & (position <= waist), part & (position > waist))
            for piece in _split_at_waists(side, spacing_xyz, direction)]


def _piece_superior_mm(piece: np.ndarray, origin_kji: Sequence[float], spacing_xyz: Sequence[float],
                       direction: Sequence[float]) -> float:
    """Superior coordinate (mm) of the centroid of a boolean piece on a box whose first voxel is ``origin_kji``."""
    return _superior_mm(np.add(ndimage.center_of_mass(piece), origin_kji), spacing_xyz, direction)


def _level_pieces(part: np.ndarray, box: tuple[slice, ...], origin_kji: Sequence[float], labels_kji: np.ndarray,
                  level_of_value: Mapping[int, str], spacing_xyz: Sequence[float], direction: Sequence[float]
                  ) -> list[_Body]:
    """The bodies of one part (boolean, on ``box`` of ``labels_kji``, whose first voxel is ``origin_kji`` of the
    image): one, or one per level where its levels (each at least a quarter of the part) lie more than
    :data:`SPLIT_MM` apart along superior-inferior (two bodies grown together across a thin disc under two names)."""
    pieces = [part & (labels_kji[box] == v) for v in np.unique(labels_kji[box][part])]
    pieces = [piece for piece in pieces if piece.sum() >= 0.25 * part.sum()]
    centres = [_piece_superior_mm(piece, origin_kji, spacing_xyz, direction) for piece in pieces]
    if len(pieces) < 2 or max(centres) - min(centres) <= SPLIT_MM:
        pieces = [part]
    bodies = []
    for piece in pieces:
        mask = np.zeros(labels_kji.shape, bool)
        mask[box] = piece
        votes = np.bincount(labels_kji[mask].ravel())
        position = _position_mm(np.add(ndimage.center_of_mass(piece), origin_kji), spacing_xyz, direction)
        bodies.append(_Body(mask, int(mask.sum()), float(position[2]), level_of_value[int(np.argmax(votes))],
                            position))
    return bodies


def _fragments_joined(bodies: list[_Body]) -> list[_Body]:
    """Separate parts of one level as one body when each part's centre lies within :data:`SPLIT_MM` along
    superior-inferior, and within :data:`BODY_WIDTH_MM` in space, of the centre of the parts joined so far (cranial
    first): a body predicted in pieces (a sacrum no training case annotated, left and right halves of a body cut by a
    thin gap) is one body, and only together its pieces are large enough to count."""
    joined: list[_Body] = []
    for body in sorted(bodies, key=lambda body: (body.level, -body.superior_mm)):
        last = joined[-1] if joined else None
        if (last is None or last.level != body.level or abs(last.superior_mm - body.superior_mm) > SPLIT_MM
                or float(np.linalg.norm(last.position_mm - body.position_mm)) > BODY_WIDTH_MM):
            joined.append(body)
            continue
        voxels = last.voxels + body.voxels
        position = (last.position_mm * last.voxels + body.position_mm * body.voxels) / voxels
        joined[-1] = _Body(last.mask | body.mask, voxels, float(position[2]), last.level, position)
    return joined


def _known_level_values(level_of_value: Mapping[int, str]) -> list[int]:
    """The label values that the label map gives a known level name (present in a mask or not)."""
    return [value for value, level in level_of_value.items() if is_known_level(level)]


def _value_of_level(level_of_value: Mapping[int, str]) -> dict[str, int]:
    """The label map read the other way round, for the known level names only."""
    return {level: value for value, level in level_of_value.items() if is_known_level(level)}


Chain = tuple[tuple[slice, ...], list[_Body]]
"""A mask's labelled box and its bodies there (cranial first), as :func:`_chain` finds them. The level steps below
take it precomputed (``chain=``, as :func:`tidy_levels` passes it) only for the very mask it was found on: a chain
of a mask relabelled since gives wrong results."""


def _chain(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz: Sequence[float],
           direction: Sequence[float]) -> Chain:
    """The labelled box of a whole mask and its bodies there (cranial first); no bodies when fewer than two levels
    are present (labelling the parts only in the labelled box is the same, and faster)."""
    values = _level_values(labels_kji, level_of_value)
    if len(values) < 2:
        return (), []
    box = foreground_box(labels_kji)
    return box, _bodies(labels_kji[box], {v: level_of_value[v] for v in values}, spacing_xyz, direction,
                        [b.start for b in box])


FIRST_SACRAL = "S1"
"""The level a chain is counted from when it skips a level (a radiologist's landmark on a sagittal lumbar scan)."""

GAP_FACTOR = 1.5
"""A chain counts as evenly spaced when no gap between neighbouring bodies exceeds this many times their median gap
(a gap of about two body pitches means a body was missed, and counting up from the sacrum would name the bodies
above it one level too low)."""


LEVEL_PITCH_MAX_MM = 52.0
"""Neighbouring bodies of one vertebra each lie at most about this far apart along superior-inferior (median over
the chain). Adult lumbar levels lie 30-40 mm apart (centroid to centroid: median 35.6 mm, largest per-case median
39.8 mm on 53 annotated lumbar MRI); two vertebrae grown together into one predicted body put the bodies 60 mm or more
apart, and counting such a chain one level per body names it wrong."""


SACRAL_DISC_FRACTION = 0.75
"""Two separate bodies both named S1 at the top of a chain's caudal sacral run are two vertebrae (L5 and S1 under one
name, a count shifted one level caudal) when the gap between them along the line joining their centres is at least
this fraction of the median such gap higher up the chain (a disc about as thick as the lumbar ones, 8-12 mm); the
sacrum's own segments are fused (S1-S2: no disc, or a rudimentary one of a few mm, under this fraction), and pieces
of it named alike keep their levels."""

MIN_GAPS_COMPARED = 3
"""The median gap of :data:`SACRAL_DISC_FRACTION` is taken over at least this many gaps (one odd gap moves a median
of two)."""


def _gap_along_centres_mm(upper: np.ndarray, lower: np.ndarray, spacing_kji: np.ndarray) -> float:
    """Length (mm) of the stretch between two bodies (boolean masks on one array, spacing in array order) on the
    line joining their centres: from where the line last leaves ``upper`` to where it next enters ``lower``; 0 where
    they touch or interleave along it (``lower`` not entered after ``upper`` is left), NaN where it misses either."""
    start, stop = (np.asarray(ndimage.center_of_mass(mask)) for mask in (upper, lower))
    steps = max(int(np.ceil(4 * np.abs(stop - start).max())), 2)  # a quarter voxel
    along = np.linspace(0.0, 1.0, steps + 1)
    points = np.clip(np.rint(start + along[:, None] * (stop - start)).astype(int), 0, np.array(upper.shape) - 1)
    in_upper, in_lower = upper[tuple(points.T)], lower[tuple(points.T)]
    if not in_upper.any() or not in_lower.any():
        return float("nan")
    left = along[in_upper].max()
    entered = along[in_lower & (along > left)]
    if not len(entered):
        return 0.0
    between = entered.min() - left - 1.0 / steps  # the samples strictly between the two, each a step long
    return float(max(between, 0.0) * np.linalg.norm((stop - start) * spacing_kji))


def _sacral_name_repeated_across_a_disc(bodies: Sequence[_Body], top: int, spacing_xyz: Sequence[float]) -> bool:
    """Whether ``bodies[top]``, the most cranial body of the chain's caudal sacral run, and the body below it are
    both named S1, are both body-sized (:data:`MIN_BODY_FRACTION` of the largest) and lie a disc apart: their gap
    along the line joining their centres at least :data:`SACRAL_DISC_FRACTION` of the median of the gaps from the
    chain's top down to ``bodies[top]`` (those the line crosses, touching ones left out; at least
    :data:`MIN_GAPS_COMPARED`). A network that counts one level caudal of the truth names L5 "S1" above the real S1;
    the sacrum's fused segments have no such disc between them. (Two "S2" a disc apart would be L5 and S1 named two
    levels low: not counted from.)"""
    if (top + 1 >= len(bodies) or bodies[top].level != FIRST_SACRAL or bodies[top + 1].level != FIRST_SACRAL
            or min(bodies[top].voxels, bodies[top + 1].voxels) < MIN_BODY_FRACTION * max(b.voxels for b in bodies)):
        return False
    spacing_kji = np.asarray(spacing_xyz, float)[::-1]
    above = [_gap_along_centres_mm(upper.mask, lower.mask, spacing_kji)
             for upper, lower in zip(bodies[:top], bodies[1:top + 1], strict=True)]
    above = [gap for gap in above if gap > 0]  # NaN and touching bodies (a bridge split) say nothing of the discs
    if len(above) < MIN_GAPS_COMPARED:
        return False
    gap = _gap_along_centres_mm(bodies[top].mask, bodies[top + 1].mask, spacing_kji)
    return bool(gap >= SACRAL_DISC_FRACTION * float(np.median(above)))


def _gaps_mm(superior_mm: Sequence[float]) -> np.ndarray:
    """The gaps (mm) between neighbouring bodies at these positions along superior (any order)."""
    return np.abs(np.diff(sorted(superior_mm)))


def _one_vertebra_each(superior_mm: Sequence[float]) -> bool:
    """Whether bodies at these positions (along superior, any order; at least two) are one vertebra each: their
    median gap is at most :data:`LEVEL_PITCH_MAX_MM`."""
    gaps = _gaps_mm(superior_mm)
    return len(gaps) >= 1 and float(np.median(gaps)) <= LEVEL_PITCH_MAX_MM


def _evenly_spaced(superior_mm: Sequence[float]) -> bool:
    """Whether bodies at these positions (along superior, any order; at least four) follow each other without a
    missed body."""
    gaps = _gaps_mm(superior_mm)  # with fewer than three gaps a missed body cannot be told apart
    return len(gaps) >= 3 and float(gaps.max()) <= GAP_FACTOR * float(np.median(gaps))


def _regular_levels() -> list[str]:
    """The regular levels, cranial first (transitional variants such as L6 and T13 left out)."""
    return [level for level in level_order() if not is_optional_level(level)]


def _levels_apart(level: str, other: str) -> int:
    """How many regular levels apart two regular levels are (L5 and S1: 1)."""
    order = _regular_levels()
    return abs(order.index(level) - order.index(other))


def _cranial_levels(anchor: str, count: int) -> list[str]:
    """``anchor`` and the ``count - 1`` regular levels cranial to it, caudal first (transitional variants such as
    L6 and T13 skipped)."""
    order = _regular_levels()
    start = order.index(anchor)
    return [order[start - k] if start - k >= 0 else "" for k in range(count)]


def count_levels_from_sacrum(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz: Sequence[float],
                             direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
                             *, chain: Chain | None = None) -> tuple[np.ndarray, list[str]]:
    """Relabel the bodies of a multiclass mask by counting up from the sacrum when the predicted chain names one level
    twice (two separate bodies both "L5") or, above an S1, skips one (an "L4" directly above S1; "L1" then "L3"): the
    usual failures of a network that places levels by position in a field of view unlike its training scans. The sacrum
    is the run of bodies predicted sacral (S1, S2) at the caudal end (it may come in several pieces, which keep their
    levels; pieces of one level side by side are one body, so a sacrum predicted in slivers too small to count alone
    still anchors the count); its most cranial body keeps its level and each body cranial to it gets the next level up,
    as a radiologist counts on a sagittal lumbar scan; a body counted beyond the levels the mask can hold becomes
    background. Where the run's two most cranial bodies are both named S1 and lie a disc apart
    (:func:`_sacral_name_repeated_across_a_disc`: L5 named "S1" above the real S1), the lower one is the sacrum's top
    and the chain is counted from it, the upper one with the bodies above it. A skipped level is counted again only
    when at least three bodies lie above S1, they follow each other evenly (no gap over :data:`GAP_FACTOR` times the
    median: a missed body would make the count one too low) and none is a transitional variant (L6, T13). Chains
    named in order (but for an S1 named twice across a disc), without a sacral body at the caudal end, or of bodies
    that each hold more than one vertebra (median gap over :data:`LEVEL_PITCH_MAX_MM`), are left alone.
    Returns the mask and one note when it relabelled."""
    box, bodies = chain if chain is not None else _chain(labels_kji, level_of_value, spacing_xyz, direction)
    if not bodies:
        return labels_kji, []
    predicted = [body.level for body in bodies]
    sacrum = len(predicted)  # the caudal run of sacral bodies (the sacrum may come in several pieces)
    while sacrum > 0 and is_sacral_level(predicted[sacrum - 1]):
        sacrum -= 1
    if sacrum == len(predicted) or sacrum == 0:
        return labels_kji, []
    shifted = _sacral_name_repeated_across_a_disc(bodies, sacrum, spacing_xyz)
    sacrum += int(shifted)  # then the lower of the two is the sacrum's top, and the upper one is counted as L5
    above = predicted[:sacrum]
    anchor = predicted[sacrum]  # the most cranial sacral body keeps its level; the sacral pieces below stay
    expected = _cranial_levels(anchor, sacrum + 1)[::-1][:-1]
    repeated = len(set(above)) < len(above)
    positions = [body.superior_mm for body in bodies[:sacrum + 1]]  # the bodies above the sacrum and its top one
    skipped = (anchor == FIRST_SACRAL and above != expected and not any(map(is_optional_level, above))
               and _evenly_spaced(positions))
    if not (repeated or skipped or shifted) or not _one_vertebra_each(positions):
        return labels_kji, []
    counted = expected + predicted[sacrum:]
    return _counted_chain(labels_kji, box, bodies[:sacrum], counted, level_of_value, f"levels counted up from "
                          f"{anchor}: the bodies predicted {' '.join(predicted)} (cranial first)")


def _counted_chain(labels_kji: np.ndarray, box: tuple[slice, ...], bodies: Sequence[_Body], counted: Sequence[str],
                   level_of_value: Mapping[int, str], said: str) -> tuple[np.ndarray, list[str]]:
    """``labels_kji`` with ``bodies`` (of the chain in ``box``, cranial first) given the levels ``counted`` of the
    whole chain (the first ``len(bodies)``; a level the label map lacks, or "" beyond C1, as background), and the
    note: ``said``, "are" and the levels counted, and the levels set to background."""
    value_of_level = _value_of_level(level_of_value)
    relabelled = labels_kji.copy()
    for body, level in zip(bodies, counted[:len(bodies)], strict=True):
        relabelled[box][body.mask] = value_of_level.get(level, 0)
    dropped = [level or "beyond C1" for level in counted if level not in value_of_level]
    note = f"{said} are {' '.join(level or '-' for level in counted)}"
    return relabelled, [note + (f"; {', '.join(dropped)} not in the label map, set to background" if dropped else "")]


def _repeat_without_sacrum(bodies: Sequence[_Body]) -> bool:
    """Whether a chain (cranial first) names one level twice, has no sacral body at its caudal end, names no
    transitional variant (L6, T13), follows itself evenly (:func:`_evenly_spaced`) and is of one vertebra per body
    (:data:`LEVEL_PITCH_MAX_MM`): the chains :func:`count_levels_from_stage1` and :func:`count_levels_by_votes`
    name again."""
    predicted = [body.level for body in bodies]
    positions = [body.superior_mm for body in bodies]
    return (len(set(predicted)) < len(predicted) and not is_sacral_level(predicted[-1])
            and not any(map(is_optional_level, predicted)) and _evenly_spaced(positions)
            and _one_vertebra_each(positions))


def _consecutive_runs(count: int, value_of_level: Mapping[str, int]) -> list[list[str]]:
    """Every run of ``count`` consecutive regular levels (cranial first) that the label map holds."""
    order = _regular_levels()
    runs = [order[start:start + count] for start in range(len(order) - count + 1)]
    return [run for run in runs if all(level in value_of_level for level in run)]


VOTE_SHARE = 0.25
"""A body is renamed by :func:`count_levels_by_votes` only when at least this share of its voxels was predicted as
its new level (evidence in the image, not only the count of its neighbours)."""


def count_levels_by_votes(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz: Sequence[float],
                          direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
                          *, chain: Chain | None = None) -> tuple[np.ndarray, list[str]]:
    """Relabel a chain that names one level twice and has no sacral body at its caudal end (so that
    :func:`count_levels_from_sacrum` has nothing to count from): its bodies get consecutive levels, the run that most
    of their voxels were predicted as (each body's voxels vote for the level given them; of equal runs the most
    cranial), provided every body it renames had at least :data:`VOTE_SHARE` of its voxels predicted as its new level.
    An "L5" below an L5 that is in good part "S1" (a sacrum no training case annotated) becomes S1; a repeat without
    such evidence is left alone. Only for a chain that follows itself evenly (:func:`_evenly_spaced`, at least four
    bodies: a missed body breaks the run), of one vertebra per body (:data:`LEVEL_PITCH_MAX_MM`) and names no
    transitional variant (L6, T13). Returns the mask and one note
    when it relabelled."""
    box, bodies = chain if chain is not None else _chain(labels_kji, level_of_value, spacing_xyz, direction)
    if not _repeat_without_sacrum(bodies):
        return labels_kji, []
    predicted = [body.level for body in bodies]
    value_of_level = _value_of_level(level_of_value)
    votes = [np.bincount(labels_kji[box][body.mask], minlength=max(level_of_value) + 1) for body in bodies]

    def supported(run: list[str]) -> bool:
        return all(old == new or v[value_of_level[new]] >= VOTE_SHARE * body.voxels
                   for v, body, old, new in zip(votes, bodies, predicted, run, strict=True))

    def score(run: list[str]) -> int:
        return sum(int(v[value_of_level[level]]) for v, level in zip(votes, run, strict=True))

    runs = [run for run in _consecutive_runs(len(bodies), value_of_level) if supported(run)]
    if not runs:
        return labels_kji, []
    counted = max(runs, key=score)
    relabelled = labels_kji.copy()
    for body, level in zip(bodies, counted, strict=True):
        relabelled[box][body.mask] = value_of_level[level]
    return relabelled, [f"levels named by the votes of their voxels: the bodies predicted {' '.join(predicted)} "
                        f"(cranial first) are {' '.join(counted)}"]


STAGE1_SHARE = 0.5
""":func:`count_levels_from_stage1` counts from stage 1's level of the chain's caudal body only where that level holds
more than this share of the body's voxels that stage 1 gave a level."""

STAGE1_COVER = 0.25
"""... and where stage 1 gave a level to at least this share of the body's voxels (stage 1 segments at a coarse
resolution; a body it hardly found says nothing of its level)."""


def count_levels_from_stage1(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz: Sequence[float],
                             direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1), *, stage1_kji: np.ndarray,
                             chain: Chain | None = None) -> tuple[np.ndarray, list[str]]:
    """Relabel a chain that names one level twice and has no sacral body at its caudal end
    (:func:`_repeat_without_sacrum`; :func:`count_levels_from_sacrum` has nothing to count from) by counting up from
    the level that stage 1 (``stage1_kji``: the cascade's first stage, same grid and label values) gives its caudal
    body: that body keeps stage 1's level and each body cranial to it gets the next level up; a body counted beyond
    the levels the mask can hold becomes background.

    Stage 2 finds the bodies at full resolution but names them from a window of the slice and sometimes misses the
    sacrum; stage 1 sees the whole volume and is taught to name the body below an annotated L5 "S1"
    (docs/benchmarks.md, "Thirty-third session"), so at the chain's caudal end, a radiologist's landmark, its level
    is the better anchor: an "L1 L2 L2 L3 L4 L5" whose lowest body stage 1 calls L5 is T12 L1 L2 L3 L4 L5, and a "T11
    L1 L2 L2 L3 L4 L5" whose lowest body stage 1 calls S1 is T12 L1 L2 L3 L4 L5 S1 ("Thirty-ninth session"). It goes
    before the votes of stage 2's voxels (:func:`count_levels_by_votes`): in that session's five stage-2 trainings the
    two disagreed once, and stage 1 was right. Only where stage 1's level holds more than :data:`STAGE1_SHARE` of the
    body's voxels it gave a level, it gave a level to at least :data:`STAGE1_COVER` of them, and that level is
    stage 2's own for the body or next to it; not from a transitional variant (L6, T13) or a sacral level below S1.
    Returns the mask and one note when it relabelled."""
    if stage1_kji.shape != labels_kji.shape:
        raise ValueError(f"stage 1's mask {stage1_kji.shape} and stage 2's {labels_kji.shape} are not on one grid")
    box, bodies = chain if chain is not None else _chain(labels_kji, level_of_value, spacing_xyz, direction)
    if not _repeat_without_sacrum(bodies):
        return labels_kji, []
    caudal = bodies[-1]
    values, counts = np.unique(stage1_kji[box][caudal.mask], return_counts=True)
    named = np.isin(values, _known_level_values(level_of_value))
    if not named.any():
        return labels_kji, []
    values, counts = values[named], counts[named]
    anchor = level_of_value[int(values[np.argmax(counts)])]
    if (counts.max() <= STAGE1_SHARE * counts.sum() or counts.sum() < STAGE1_COVER * caudal.voxels
            or is_optional_level(anchor) or (is_sacral_level(anchor) and anchor != FIRST_SACRAL)
            or _levels_apart(anchor, caudal.level) > 1):
        return labels_kji, []
    predicted = " ".join(body.level for body in bodies)
    return _counted_chain(labels_kji, box, bodies, _cranial_levels(anchor, len(bodies))[::-1], level_of_value,
                          f"levels counted up from stage 1's {anchor} at the caudal end: the bodies predicted "
                          f"{predicted} (cranial first)")


def one_level_per_body(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz: Sequence[float],
                       direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
                       *, chain: Chain | None = None) -> tuple[np.ndarray, list[str]]:
    """Give the voxels of a body the level of most of its voxels where their own level's centre in the body lies
    within :data:`SPLIT_MM` of the body's centre along superior-inferior (a body is one vertebra: stage 2 sometimes
    calls the lower part of L5 "L4"); a level whose voxels lie further off (a small piece of sacrum grown onto L5)
    keeps its voxels, as do islands (:data:`MIN_BODY_FRACTION`). Returns the mask and one note when it relabelled
    voxels."""
    box, bodies = chain if chain is not None else _chain(labels_kji, level_of_value, spacing_xyz, direction)
    value_of_level = _value_of_level(level_of_value)
    relabelled, changed = labels_kji.copy(), 0
    offset = [b.start for b in box]
    for body in bodies:
        value, inside = value_of_level[body.level], relabelled[box]
        for other in np.unique(inside[body.mask]):
            voxels = body.mask & (inside == other)
            centre = _superior_mm(np.add(ndimage.center_of_mass(voxels), offset), spacing_xyz, direction)
            if other != value and abs(centre - body.superior_mm) <= SPLIT_MM:
                changed += int(np.count_nonzero(voxels))
                inside[voxels] = value
    if not changed:
        return labels_kji, []
    return relabelled, [f"one level per body: {changed} voxel(s) given their body's level"]


def tidy_levels(labels_kji: np.ndarray, level_of_value: Mapping[int, str], spacing_xyz: Sequence[float],
                direction: Sequence[float], order: bool = True, count_levels: bool = True,
                stage1_kji: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """The steps of this module on one mask, in order: parts out of order removed or given their body's level
    (``order``); the chain counted from the sacrum, or else from stage 1's level of its caudal body (with
    ``stage1_kji``, stage 1's mask on the same grid), or else by its voxels' votes, and one level per body
    (``count_levels``). The mask and their notes."""
    notes: list[str] = []
    if order:
        labels_kji, removed = remove_out_of_order_parts(labels_kji, level_of_value, spacing_xyz, direction)
        notes += removed
    if count_levels:  # the bodies are found once, and again only after a step relabelled them
        chain = _chain(labels_kji, level_of_value, spacing_xyz, direction)
        labels_kji, counted = count_levels_from_sacrum(labels_kji, level_of_value, spacing_xyz, direction,
                                                       chain=chain)
        if not counted and stage1_kji is not None:
            labels_kji, counted = count_levels_from_stage1(labels_kji, level_of_value, spacing_xyz, direction,
                                                           stage1_kji=stage1_kji, chain=chain)
        if not counted:
            labels_kji, counted = count_levels_by_votes(labels_kji, level_of_value, spacing_xyz, direction,
                                                        chain=chain)
        labels_kji, uniform = one_level_per_body(labels_kji, level_of_value, spacing_xyz, direction,
                                                 chain=None if counted else chain)
        notes += counted + uniform
    return labels_kji, notes
