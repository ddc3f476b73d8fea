"""What a run will do, decided before its first step, and nothing else: the form (primal or the
dual form of rung 7), the variant and whether it runs its compiled loops, and whether it starts
on numpy while its compiled route is built.

``plan`` is the one place where ``kernel=`` meets the problem: a variant's name is that variant;
``"auto"`` decides by the numbers in ``fastnn.auto.policy`` (the dual form by its flop count, a
variant by ``auto.choice``'s measurement, numpy while ``auto.build`` builds); a resumed run
continues with what its checkpoint ran.  It only decides: the trainer builds the backend it
names (``backends``).  Threads are the run's watch's (``auto.thread_watch``), started before the
plan so that the set-up and auto's measurement run on the cores the machine has free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

from .. import kernels
from ..auto import build, policy
from ..auto.choice import resolve
from ..kernels import sparse
from ..kernels.bf16 import Bf16Data
from ..kernels.variant import Variant, step_flops
from ..validation import is_sparse


class Route(NamedTuple):
    """A way to run the steps: ``form`` ``"primal"`` (``variant``'s steps, ``whole``: in its
    compiled loops) or ``"dual"`` (``variant`` serves the one-batch calls)."""

    form: str
    variant: Variant
    whole: bool

    @property
    def name(self) -> str:
        """What runs: the variant's name, or the form's."""
        return self.variant.name if self.form == "primal" else self.form


@dataclass(frozen=True)
class Plan:
    """``route``: what runs from the first step.  ``then``: what the run switches to once
    ``waits_for`` is built (``build.ready_now``), None when it does not wait.  ``cost``: the
    flops of a step of the route the run ends on (the thread watch probes only large ones)."""

    route: Route
    then: Optional[Route] = None
    waits_for: Optional[str] = None
    cost: int = 0

    @property
    def dual(self) -> bool:
        """Whether the run trains in the dual form (now or once it is built)."""
        return (self.then or self.route).form == "dual"


def plan(opts, opt, params, m, batch, total, resumed, first_batch, materializations=1) -> Plan:
    """The plan of a run of ``total`` steps of ``batch`` rows over ``m`` training rows from
    ``params`` (``first_batch()``: ``(x, y)`` of its first batch, what ``auto`` measures on)."""
    n, h = params.w1.shape
    k = params.w2.shape[1]
    xb, yb = first_batch()
    if is_sparse(xb):  # one rung takes sparse input: nothing to choose, measure or build first
        if opts.kernel in kernels.FORMS:
            raise ValueError(f"kernel {opts.kernel!r}: the dual form takes dense x; sparse x "
                             f"trains on the sparse rung (kernel='auto' or 'sparse')")
        variant, whole = choose_variant(opts.kernel, opts.whole_loop, params, xb, yb, resumed)
        return Plan(Route("primal", variant, whole),
                    cost=sparse.step_flops(xb.stored(), xb.shape[0], h, k))
    if isinstance(xb, Bf16Data):  # bfloat16 data: the bf16 rung, or its emulation
        if opts.kernel in kernels.FORMS:
            raise ValueError(f"kernel {opts.kernel!r}: the dual form runs in float32 or "
                             f"float64; dtype='bfloat16' trains on the bf16 rung")
        variant, whole = choose_variant(opts.kernel, opts.whole_loop, params, xb, yb, resumed)
        return Plan(Route("primal", variant, whole), cost=step_flops(batch, n, h, k))
    dual = choose_dual(opts.kernel, opts.whole_loop, opt, params, m, batch, total, resumed,
                       materializations)
    # (the dual form's step is G[b] @ A and the primal output layer: 2 B M h + 6 B h k)
    cost = 2 * batch * m * h + 6 * batch * h * k if dual else step_flops(batch, n, h, k)
    primary = kernels.get(kernels.PRIMARY)
    auto_fresh = opts.kernel == kernels.AUTO and resumed is None
    if dual:
        route = Route("dual", primary, True)
        if auto_fresh and not build.usable("dual", params.dtype):
            # numpy while the dual form is built; with momentum the dual form cannot take over a
            # primal velocity, so the compiled primal route does
            then = route if not opt.momentum else Route("primal", primary, True)
            cost = cost if not opt.momentum else step_flops(batch, n, h, k)
            return Plan(_numpy(), then, "dual" if then.form == "dual" else kernels.PRIMARY, cost)
        return Plan(route, cost=cost)
    variant, whole = choose_variant(opts.kernel, opts.whole_loop, params, xb, yb, resumed)
    route = Route("primal", variant, whole)
    if auto_fresh and variant.name == policy.BOOTSTRAP and build.building(params.dtype):
        # nothing compiled yet: it is being built; the primary route, not measured (that would
        # stall the run ~0.5 s; the next run on this shape measures)
        return Plan(route, Route("primal", primary, opts.whole_loop is not False),
                    kernels.PRIMARY, cost)
    return Plan(route, cost=cost)


def _numpy() -> Route:
    return Route("primal", kernels.get(policy.BOOTSTRAP), False)


def choose_dual(kernel, whole_loop, opt, params, m, batch, total, resumed,
                materializations=1) -> bool:
    """Whether the run trains in the dual form (``kernels/dual.py``): asked for
    (``kernel="dual"``: an error saying why where it cannot), chosen by ``auto`` where it
    applies and its flop count is under ``policy.DUAL_FLOPS_RATIO`` of the primal's, or
    continued from a checkpoint of a dual run."""
    from ..kernels import dual

    n = params.w1.shape[0]
    applies = opt.name == "sgd" and m < n and whole_loop is not False
    if kernel == dual.FORM.name:
        if opt.name != "sgd":
            raise ValueError(f"kernel 'dual': the dual form needs an update linear in the "
                             f"gradient (SGD, momentum, Nesterov, L2); {opt.name} is element-wise "
                             f"in w1 and stays primal: pass kernel='auto' or a step variant")
        if m >= n:
            raise ValueError(f"kernel 'dual': {m} training rows, {n} features: the dual form "
                             f"pays only with fewer rows than features; pass kernel='auto' or "
                             f"a step variant")
        if whole_loop is False:
            raise ValueError("kernel 'dual': its steps run in a compiled loop (whole_loop)")
        return True
    if kernel != kernels.AUTO or not applies:
        return False
    if resumed is not None and resumed.meta.get("ran") is not None:
        return resumed.meta.get("ran") == dual.FORM.name
    primal, done = dual.flops(m, n, params.w1.shape[1], params.w2.shape[1], batch, total,
                              opt.alpha, materializations)
    return done < policy.DUAL_FLOPS_RATIO * primal


def choose_variant(kernel, whole_loop, params, xb, yb, resumed):
    """``(variant, whole)``: the variant for the whole run and whether it runs its compiled loops.

    ``auto`` is resolved once, on the first batch's shape, or taken from a resumed checkpoint
    (the variant that wrote it: ``auto``'s choice may have changed since, and the resumed run must
    continue with the same arithmetic to end bitwise equal).  ``whole_loop=True`` is never
    dropped silently: ``auto`` chooses among the variants with compiled loops, and a variant
    without them is an error."""
    ran = resumed.meta.get("ran") if resumed is not None and kernel == kernels.AUTO else None
    ran = kernels.ALIASES.get(ran, ran)
    if ran in kernels.names(reference=True):
        variant = kernels.get(ran)
    else:
        variant = resolve(kernel, params, xb, yb, whole_loop=bool(whole_loop))
    if whole_loop is None:
        return variant, variant.whole_loop
    if whole_loop and not variant.whole_loop:
        with_loops = [v.name for v in kernels.variants(reference=True) if v.whole_loop]
        how = " (the variant this run resumes with, chosen by auto)" if ran else ""
        raise ValueError(f"whole_loop: kernel {variant.name!r}{how} has no compiled training "
                         f"loop; kernels with one: {', '.join(with_loops)}")
    return variant, bool(whole_loop)
