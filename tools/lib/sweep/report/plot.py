"""The sweep report's plot: box AP and AR@100 (KITTI: 3D and BEV AP40 at moderate
difficulty) against epsilon, as a PNG."""
from pathlib import Path
from typing import List, Sequence, Tuple

from .runs import RunResult
from .tables import group_by_setting, is_seed_group, logged, mean_sd


def _points(runs: Sequence[RunResult], key: str,
            alpha_weighted: bool) -> List[Tuple[float, float, float]]:
    """(epsilon, value in %, sd) of the runs with (or without) alpha_t on the epsilon
    term that logged ``key``; seeds of one setting are one point, their mean and sd."""
    points = []
    for group in group_by_setting(runs):
        group = [r for r in group if r.epsilon is not None and r.metrics.get(key, -1) >= 0
                 and (r.alpha_weighted is False) != alpha_weighted]
        if group and is_seed_group(group):
            mean, sd = mean_sd([100 * r.metrics[key] for r in group])
            points.append((group[0].epsilon, mean, sd or 0.0))
        else:
            points += [(r.epsilon, 100 * r.metrics[key], 0.0) for r in group]
    return sorted(points)


#: The two panels (title, metric key), the axes' prefix and the evaluation they come from.
COCO_PANELS = ((('AP', 'bbox_mAP'), ('AR@100', 'bbox_AR@100')), 'box ', 'COCO eval')
KITTI_PANELS = ((('3D AP40 moderate', 'kitti/Overall_3D_AP40_moderate'),
                 ('BEV AP40 moderate', 'kitti/Overall_BEV_AP40_moderate')), '', 'KITTI eval')


def plot_sweep(runs: Sequence[RunResult], out_file: str) -> None:
    """AP (left) and AR@100 (right; KITTI: 3D and BEV AP) against epsilon: alpha-weighted
    Poly-1 and focal runs as a line, the others as crosses, the baseline (``runs[0]``, or
    the mean of its seeds) as a dashed horizontal line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    base_runs = [r for r in runs if r.setting == runs[0].setting]
    base_runs = base_runs if is_seed_group(base_runs) else [runs[0]]
    panels, prefix, evaluation = (COCO_PANELS if any('bbox_mAP' in r.metrics for r in runs)
                                  else KITTI_PANELS)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (title, key) in zip(axes, panels, strict=True):
        line, other = _points(runs, key, True), _points(runs, key, False)
        if line:
            ax.errorbar(*zip(*line, strict=True), fmt='o-', color='tab:blue', capsize=3,
                        label='Poly-1 (focal at eps=0)')
        if other:
            ax.errorbar(*zip(*other, strict=True), fmt='x', color='tab:red', markersize=9,
                        capsize=3, label='Poly-1, no alpha_t on eps term')
        if base_values := logged(base_runs, key):
            ax.axhline(100 * mean_sd(base_values)[0], color='gray', ls='--', lw=1,
                       label=f'baseline ({runs[0].loss_label})')
        if line or other:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f'{title} not logged', ha='center', va='center',
                    transform=ax.transAxes)
        ax.set(xlabel='epsilon', ylabel=f'{prefix}{title} (%)',
               title=f'{prefix}{title} vs epsilon ({evaluation})')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out_file), dpi=120)
    plt.close(fig)


def plot_formats() -> List[str]:
    """The file types (extensions) the plot can be written as: matplotlib's for this backend."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    return list(Figure().canvas.get_supported_filetypes())
