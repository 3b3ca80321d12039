#!/usr/bin/env python3
"""Rebuild the training photo pool from freely licensed Debian/Ubuntu packages.

    python training/build_train_pool.py                 # -> data/train_pool/ (+ manifest)
    python training/build_train_pool.py --verify        # compare with the committed manifest

Downloads pinned package versions with ``apt-get download`` (no root needed), unpacks them with
``dpkg-deb -x``, extracts the natural photos and photographic textures listed below, drops
near-duplicates, and writes ``<package>__<name>.jpg`` (short side <= 1080 px, JPEG quality 95)
plus ``manifest.json`` (per image: package, version, path inside the package, licence, size,
sha256 of the file and of the decoded pixels). The pixel hash is what ``--verify`` compares:
it does not depend on the JPEG encoder of the machine.

Packages reserved for independent evaluation are never downloaded (RESERVED).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import re
import shutil
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np

os.environ.setdefault('OPENCV_IO_ENABLE_OPENEXR', '1')  # Blender's world HDRIs

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / 'training' / 'train_pool_manifest.json'
RESERVED = ('opencv-doc', 'visp-images-data', 'lomiri-wallpapers', 'mate-backgrounds')
MIN_SIDE = 200
MAX_SHORT_SIDE = 1080
DUPLICATE_NCC = 0.97  # 32x24 gray thumbnails correlating more than this are one photo
PHOTO_SUFFIXES = ('.jpg', '.jpeg', '.png', '.webp')

Candidate = tuple[str, Callable[[], 'np.ndarray | None']]  # (path in package, loader)


# ---------------------------------------------------------------- decoding helpers
def decode(blob: bytes) -> np.ndarray | None:
    """BGR uint8 image from encoded bytes; None for undecodable or cut-out (transparent) art."""
    image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.ndim == 3 and image.shape[2] == 4:
        if np.mean(image[..., 3] < 250) > 0.02:
            return None
        image = image[..., :3]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image if image.dtype == np.uint8 else None


def read(path: Path) -> np.ndarray | None:
    return decode(path.read_bytes())


def opaque_band(path: Path) -> np.ndarray | None:
    """The longest run of fully opaque rows of an RGBA panorama side (its photographed part)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or image.shape[2] != 4:
        return None
    opaque = (image[..., 3] > 250).mean(axis=1) > 0.99
    best, start = (0, 0), None
    for row, flag in enumerate([*opaque, False]):
        if flag and start is None:
            start = row
        elif not flag and start is not None:
            best = max(best, (row - start, start))
            start = None
    length, top = best
    return image[top : top + length, :, :3] if length else None


def tiles(image: np.ndarray | None, max_aspect: float = 1.6) -> list[np.ndarray]:
    """Split a wide panorama into side-by-side tiles no wider than ``max_aspect`` x height."""
    if image is None:
        return []
    height, width = image.shape[:2]
    count = max(1, int(np.ceil(width / (max_aspect * height))))
    edges = np.linspace(0, width, count + 1).round().astype(int)
    return [image[:, a:b] for a, b in zip(edges[:-1], edges[1:])]


def tone_map(hdr: np.ndarray) -> np.ndarray:
    """Linear HDR (float BGR) to 8-bit: log-average exposure, Reinhard curve, gamma 2.2."""
    hdr = np.nan_to_num(np.maximum(hdr.astype(np.float64), 0.0))
    luminance = hdr.mean(axis=2)
    key = np.exp(np.log(luminance + 1e-4).mean())
    scaled = hdr * (0.18 / key)
    mapped = (scaled / (1.0 + scaled)) ** (1 / 2.2)
    return np.clip(mapped * 255.0 + 0.5, 0, 255).astype(np.uint8)


def rcc_entries(path: Path) -> Iterator[tuple[str, bytes]]:
    """(resource path, bytes) of every file in a Qt binary resource bundle (.rcc)."""
    data = path.read_bytes()
    if data[:4] != b'qres':
        return
    version, tree, payload, names = struct.unpack('>IIII', data[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack('>H', data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode('utf-16-be')

    pending = [(0, '')]
    while pending:
        index, prefix = pending.pop()
        node = tree + index * node_size
        name_offset, flags = struct.unpack('>IH', data[node : node + 6])
        name = name_at(name_offset) if index else ''
        if flags & 2:  # directory: child count, first child index
            count, first = struct.unpack('>II', data[node + 6 : node + 14])
            pending += [(child, f'{prefix}{name}/') for child in range(first, first + count)]
            continue
        if flags & 4:  # zstd-compressed entries do not occur for the photos used here
            continue
        (offset,) = struct.unpack('>I', data[node + 10 : node + 14])
        (size,) = struct.unpack('>I', data[payload + offset : payload + offset + 4])
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        yield prefix + name, zlib.decompress(blob[4:]) if flags & 1 else blob


def largest_embedded_jpeg(path: Path) -> np.ndarray | None:
    """The largest JPEG stream inside a binary container (Enlightenment .edj themes)."""
    data = path.read_bytes()
    best = None
    for found in re.finditer(b'\xff\xd8\xff', data):
        image = cv2.imdecode(np.frombuffer(data, np.uint8, offset=found.start()), cv2.IMREAD_COLOR)
        if image is not None and (best is None or image.size > best.size):
            best = image
    return best


# ---------------------------------------------------------------- what each package gives
GCOMPRIS_FOLDERS = (
    'erase/',
    'explore_monuments/',
    'explore_world_animals/',
    'explore_farm_animals/',
    'categorization/resource/images/fishes/',
    'categorization/resource/images/monuments/',
    'categorization/resource/images/others/',
    'categorization/resource/images/renewable/',
    'categorization/resource/images/tools/',
    'clickgame/resource/sea',
)
PLASMA_PHOTOS = [
    'BytheWater',
    'ColdRipple',
    'ColorfulCups',
    'DarkestHour',
    'EveningGlow',
    'FallenLeaf',
    'Grey',
    'Kite',
    'OneStandsOut',
    'Path',
    'summer_1am',
]
ENLIGHTENMENT_PHOTOS = [
    'Bamboo',
    'Foggy-Trees',
    'God-Rays',
    'Green-Maple',
    'Lichen-Branches',
    'Mountain',
    'Peaks',
    'Red-Maple',
    'Sea-of-Lanterns',
    'Snow-Trees',
    'Spruce-Needles',
    'Sunset-Clouds',
    'White-Flower',
    'Yellow-Flower',
]
SKIMAGE_PHOTOS = [
    'astronaut.png',
    'brick.png',
    'camera.png',
    'chelsea.png',
    'coffee.png',
    'coins.png',
    'grass.png',
    'gravel.png',
    'motorcycle_left.png',
    'rocket.jpg',
]
STELLARIUM_SIDES = [
    'garching/garching-gl1.png',
    'garching/garching-gl2.png',
    'garching/garching-gl3.png',
    'garching/garching-gl4.png',
    'grossmugl/grossmugl_leeberg_crop11.25_2048.png',
    'hurricane/hurricane1.png',
    'hurricane/hurricane2.png',
    'mars/mars.png',
    'trees/trees_512.png',
]
STELLARIUM_GROUNDS = [
    'garching/garching-ground3.png',
    'guereins/guereinsb.png',
    'hurricane/hurricaneb.png',
    'ocean/ocean9.png',
]
KRITA_TEXTURES = [
    '14_texture-rock',
    '15_texture-rockB',
    '16_texture-woody',
    '18_texture-bark',
    '19_texture-crackle',
    '20_texture-vegetal',
    '22_texture-reptile',
]
ETR_TERRAINS = [
    'dirt01',
    'floor01',
    'floor02',
    'grass01',
    'grass02',
    'grass03',
    'icy_pave01',
    'icy_rock06',
    'mud01',
    'pave01',
    'pave02',
    'pebbles01',
    'pebbles04',
    'pebbles05',
    'rock',
    'rock01',
    'rock02',
    'rock03',
    'rock04',
    'rock05',
    'rock06',
    'rock07',
    'sand01',
    'snowy_grass03',
    'snowy_rock06',
]
BLENDER_WORLDS = [
    'city',
    'courtyard',
    'forest',
    'interior',
    'night',
    'studio',
    'sunrise',
    'sunset',
]


def gcompris(root: Path) -> Iterator[Candidate]:
    for bundle in sorted((root / 'usr/share/gcompris-qt/rcc').glob('*.rcc')):
        for path, blob in sorted(rcc_entries(bundle)):
            key = path.split('/activities/', 1)[-1]
            if key.lower().endswith(PHOTO_SUFFIXES) and key.startswith(GCOMPRIS_FOLDERS):
                yield key, lambda blob=blob: decode(blob)


def plasma(root: Path) -> Iterator[Candidate]:
    for name in PLASMA_PHOTOS:
        folder = root / 'usr/share/wallpapers' / name / 'contents/images'
        largest = max(folder.iterdir(), key=lambda p: np.prod([int(v) for v in p.stem.split('x')]))
        yield f'{name}/{largest.stem}', lambda p=largest: read(p)


def enlightenment(root: Path) -> Iterator[Candidate]:
    folder = root / 'usr/share/enlightenment/data/backgrounds'
    for name in ENLIGHTENMENT_PHOTOS:
        yield name, lambda p=folder / f'{name}.edj': largest_embedded_jpeg(p)


def skimage(root: Path) -> Iterator[Candidate]:
    folder = root / 'usr/lib/python3/dist-packages/skimage/data'
    for name in SKIMAGE_PHOTOS:
        yield Path(name).stem, lambda p=folder / name: read(p)


def stellarium(root: Path) -> Iterator[Candidate]:
    folder = root / 'usr/share/stellarium/landscapes'
    for name in STELLARIUM_SIDES:
        for index, tile in enumerate(tiles(opaque_band(folder / name))):
            yield f'{name[:-4]}_{index}', lambda tile=tile: tile
    for name in STELLARIUM_GROUNDS:
        yield name[:-4], lambda p=folder / name: read(p)


def blender(root: Path) -> Iterator[Candidate]:
    folder = root / 'usr/share/blender/datafiles/studiolights/world'
    for name in BLENDER_WORLDS:
        hdr = cv2.imread(str(folder / f'{name}.exr'), cv2.IMREAD_UNCHANGED)
        if hdr is None:
            continue
        height = hdr.shape[0]
        band = tone_map(hdr[height // 4 : 3 * height // 4])  # the horizon band of the panorama
        for index, tile in enumerate(tiles(band, max_aspect=1.34)):
            yield f'{name}_{index}', lambda tile=tile: tile


def krita(root: Path) -> Iterator[Candidate]:
    for name in KRITA_TEXTURES:
        yield name, lambda p=root / f'usr/share/krita/patterns/{name}.png': read(p)


def extremetuxracer(root: Path) -> Iterator[Candidate]:
    for name in ETR_TERRAINS:
        yield name, lambda p=root / f'usr/share/games/etr/terrains/{name}.png': read(p)


@dataclass(frozen=True)
class Source:
    package: str
    version: str  # Debian 12 (bookworm) version; apt-get download pins it
    extract: Callable[[Path], Iterator[Candidate]]


SOURCES = (
    Source('gcompris-qt-data', '3.1-2', gcompris),
    Source('plasma-workspace-wallpapers', '4:5.27.5-2', plasma),
    Source('enlightenment-data', '0.25.4-2', enlightenment),
    Source('python3-skimage', '0.19.3-8', skimage),
    Source('stellarium-data', '0.22.2-1', stellarium),
    Source('blender-data', '3.4.1+dfsg-2', blender),
    Source('krita-data', '1:5.1.5+dfsg-2+deb12u1', krita),
    Source('extremetuxracer-data', '0.8.2-1', extremetuxracer),
)


# ---------------------------------------------------------------- download, unpack, licence
def fetch(source: Source, cache: Path) -> tuple[Path, str]:
    """Download (once) and unpack one package; returns (unpacked root, sha256 of the .deb)."""
    if source.package.startswith(RESERVED):
        raise SystemExit(f'{source.package} is reserved for independent evaluation')
    cache = cache.resolve()
    (cache / 'unpacked').mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f'{source.package}_*.deb'))
    if not debs:
        spec = f'{source.package}={source.version}'
        run(['apt-get', 'download', spec], cache, f'downloading {spec}')
        debs = sorted(cache.glob(f'{source.package}_*.deb'))
    deb = debs[-1]
    root = cache / 'unpacked' / source.package
    if not root.is_dir():
        run(['dpkg-deb', '-x', str(deb), str(root)], cache, f'unpacking {deb.name}')
    return root, hashlib.sha256(deb.read_bytes()).hexdigest()


def run(command: list[str], cwd: Path, what: str) -> None:
    try:
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise SystemExit(f'{what}: {command[0]} not found (needs Debian or Ubuntu)') from exc
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f'{what} failed: {exc.stderr.strip()[-500:]}') from exc


def licence(root: Path, package: str) -> str:
    """The distinct ``License:`` names of the package's Debian copyright file."""
    path = root / 'usr/share/doc' / package / 'copyright'
    if not path.is_file():
        return 'see the package copyright file'
    names = re.findall(r'^License:\s*(\S.*)$', path.read_text(errors='replace'), re.M)
    return ', '.join(dict.fromkeys(n.strip() for n in names)) or 'see the package copyright file'


# ---------------------------------------------------------------- pool
def thumbnail(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def pixel_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(f'{image.shape}'.encode() + image.tobytes()).hexdigest()


def build(out: Path, cache: Path) -> dict:
    if out.is_dir():
        for stale in out.glob('*.jpg'):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    images, dropped, packages, thumbs = [], [], {}, []
    for source in SOURCES:
        root, deb_sha = fetch(source, cache)
        packages[source.package] = {
            'version': source.version,
            'deb_sha256': deb_sha,
            'licence': licence(root, source.package),
        }
        for path, load in source.extract(root):
            image = load()
            if image is None or min(image.shape[:2]) < MIN_SIDE:
                dropped.append([source.package, path, 'not a photo or too small'])
                continue
            thumb = thumbnail(image)
            if thumbs and float(np.max(np.stack(thumbs) @ thumb)) > DUPLICATE_NCC:
                dropped.append([source.package, path, 'near-duplicate'])
                continue
            thumbs.append(thumb)
            images.append(write(image, out, source.package, path))
        shutil.rmtree(root)  # the .deb stays in the cache; its unpacked tree is not needed
    manifest = {'packages': packages, 'images': images, 'dropped': dropped}
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=1) + '\n')
    return manifest


def write(image: np.ndarray, out: Path, package: str, path: str) -> dict:
    stem = path[: -len(Path(path).suffix)] if path.lower().endswith(PHOTO_SUFFIXES) else path
    slug = re.sub(r'[^A-Za-z0-9._-]+', '_', stem).strip('_')
    name = f'{package}__{slug}.jpg'
    if (out / name).exists():
        raise SystemExit(f'two candidates map to {name}')
    scale = MAX_SHORT_SIDE / min(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise SystemExit(f'could not write {out / name}')
    decoded = cv2.imread(str(out / name), cv2.IMREAD_COLOR)
    return {
        'file': name,
        'package': package,
        'source': path,
        'shape': list(image.shape[:2]),
        'sha256': hashlib.sha256((out / name).read_bytes()).hexdigest(),
        'pixels_sha256': pixel_sha256(image),
        'decoded_sha256': pixel_sha256(decoded),
    }


def compare(built: dict, reference: dict) -> list[str]:
    """Differences between two manifests (file names and pixel hashes before encoding)."""
    ours = {i['file']: i['pixels_sha256'] for i in built['images']}
    theirs = {i['file']: i['pixels_sha256'] for i in reference['images']}
    problems = [f'missing: {name}' for name in sorted(set(theirs) - set(ours))]
    problems += [f'extra: {name}' for name in sorted(set(ours) - set(theirs))]
    problems += [
        f'different pixels: {name}'
        for name in sorted(set(ours) & set(theirs))
        if ours[name] != theirs[name]
    ]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=ROOT / 'data' / 'train_pool')
    parser.add_argument('--cache', type=Path, default=ROOT / 'data' / 'debs')
    parser.add_argument('--verify', action='store_true', help=f'compare with {MANIFEST.name}')
    parser.add_argument('--write-manifest', action='store_true', help=f'update {MANIFEST.name}')
    args = parser.parse_args()
    manifest = build(args.out, args.cache)
    counts = {}
    for item in manifest['images']:
        counts[item['package']] = counts.get(item['package'], 0) + 1
    print(f'{len(manifest["images"])} images in {args.out}: {counts}')
    print(f'{len(manifest["dropped"])} candidates dropped (see manifest.json)')
    if args.write_manifest:
        MANIFEST.write_text(json.dumps(manifest, indent=1) + '\n')
        print(f'wrote {MANIFEST}')
    if args.verify:
        problems = compare(manifest, json.loads(MANIFEST.read_text()))
        if problems:
            print('\n'.join(problems[:50]), file=sys.stderr)
            raise SystemExit(f'pool differs from {MANIFEST.name} in {len(problems)} images')
        print(f'pool matches {MANIFEST.name}: {len(manifest["images"])} images')


if __name__ == '__main__':
    main()
