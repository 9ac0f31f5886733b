"""Optimizer registry: names in experiment configs -> Nevergrad optimizers.

Each factory takes the population (candidates asked per batch, also Nevergrad's
`num_workers`) and the config's `search.options`, and returns a Nevergrad optimizer family.
Two optimizers are not one Nevergrad family: a grid (GridSearch) and TPEvo-CNN's two phases
(DepthThenGenes), each a class with Nevergrad's ask/tell interface.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Iterator, Sequence

import nevergrad as ng
import numpy as np

from nas import errors
from nas import space as space_lib


def _pso(population: int, options: dict[str, Any]):
  return ng.families.ConfPSO(popsize=population, **options)


def _de(population: int, options: dict[str, Any]):
  return ng.families.DifferentialEvolution(popsize=population, **options)


def _twopointsde(population: int, options: dict[str, Any]):
  return ng.families.DifferentialEvolution(popsize=population, crossover='twopoints', **options)


def _ga(population: int, options: dict[str, Any]):
  """A generational genetic algorithm: uniform crossover on half the offspring, plus mutation."""
  options = {'recombination_ratio': 0.5, 'offsprings': population, **options}
  return ng.families.EvolutionStrategy(popsize=population, **options)


def _cma(population: int, options: dict[str, Any]):
  return ng.families.ParametrizedCMA(popsize=population, **options)


def _registered(name: str):
  def factory(population: int, options: dict[str, Any]):
    del population  # these optimizers size their own batches from num_workers
    optimizer = ng.optimizers.registry[name]
    return optimizer.set_params(**options) if options else optimizer
  return factory


OPTIMIZERS: dict[str, Callable[[int, dict[str, Any]], Any]] = {
    'pso': _pso,
    'de': _de,
    'twopointsde': _twopointsde,
    'ga': _ga,
    'cma': _cma,
    'oneplusone': _registered('OnePlusOne'),
    'discrete_oneplusone': _registered('DiscreteOnePlusOne'),
    'portfolio_discrete_oneplusone': _registered('PortfolioDiscreteOnePlusOne'),
    'ngopt': _registered('NGOpt'),
    'random': _registered('RandomSearch'),
    'grid': None,  # exhaustive enumeration, or a declared list of points; see GridSearch
    'tpevo': None,  # DE over the depth, then a GA over the other genes; see DepthThenGenes
}

# Those whose asks do not depend on the budget, so a search with them can be extended to a
# larger one (tests/test_search.py checks each): NGOpt and the portfolio choose by the
# budget, a grid spreads its points over it, tpevo splits it into its phases.
EXTENSIBLE = frozenset({'pso', 'de', 'twopointsde', 'ga', 'cma', 'oneplusone',
                        'discrete_oneplusone', 'random'})


class GridSearch:
  """Asks every point of a finite grid once, in order, with Nevergrad's ask/tell interface.

  The grid is the search space's full product, or the points in `search.options.points`: an
  experiment that trains given networks (the reference zoo) declares them as such points.
  """

  def __init__(self, parametrization: ng.p.Array, points: Iterator[np.ndarray]):
    self.parametrization = parametrization
    self._points = iter(points)

  def ask(self):
    return self.parametrization.spawn_child(new_value=next(self._points))

  def tell(self, candidate, loss) -> None:
    del candidate, loss  # a grid does not adapt


# How many times NewNetworks asks anew before it hands out a repeat: a converged optimizer
# may find no new network, and its repeat is then stored as a duplicate.
_RETRIES_FOR_A_NEW_NETWORK = 100


class NewNetworks:
  """Wraps an ask/tell optimizer so that its asks are networks not asked before.

  An ask of a network already asked is told that network's loss (now, or when the first
  ask of it is told) and the optimizer asks anew, up to `_RETRIES_FOR_A_NEW_NETWORK` times;
  so a budget of n candidates buys n networks to train, where PSO and DE, as they converge,
  would spend part of it on networks trained before (stored as duplicates). `network` names
  the network of an ask's value (its genotype hash). Wrappers given the same `told` and
  `waiting` share what was asked, as tpevo's two phases do. Deterministic given the tells, so
  a resumed search replays the same asks.
  """

  def __init__(self, optimizer, network: Callable[[np.ndarray], str],
               told: dict[str, Any] | None = None,
               waiting: dict[str, list[tuple[Any, Any]]] | None = None):
    self._optimizer, self._network = optimizer, network
    self.parametrization = optimizer.parametrization
    self._told = {} if told is None else told  # network -> the loss told for it
    # Network asked, not yet told -> its repeats, (optimizer, candidate), told with it.
    self._waiting = {} if waiting is None else waiting

  def ask(self):
    for attempt in range(_RETRIES_FOR_A_NEW_NETWORK + 1):
      candidate = self._optimizer.ask()
      network = self._network(candidate.value)
      if attempt == _RETRIES_FOR_A_NEW_NETWORK or not (
          network in self._told or network in self._waiting):
        break
      if network in self._told:
        self._optimizer.tell(candidate, self._told[network])
      else:
        self._waiting[network].append((self._optimizer, candidate))
    self._waiting.setdefault(network, [])
    return candidate

  def tell(self, candidate, loss) -> None:
    network = self._network(candidate.value)
    self._told[network] = loss
    self._optimizer.tell(candidate, loss)
    for optimizer, repeat in self._waiting.pop(network, []):
      optimizer.tell(repeat, loss)


class DepthThenGenes:
  """TPEvo-CNN's two phases (Ghosh et al. 2023): DE chooses the depth, then a GA the rest.

  Phase one, the first half of the budget rounded to whole populations (so a synchronous
  search has told all of it before phase two asks), runs differential evolution over the
  depth genes (`SearchSpace.depth_coordinates`) with each other gene at its middle value (vector
  coordinate 0; the paper does not say which values the other hyperparameters take
  meanwhile). Phase two runs the GA of `_ga` over the other genes with the depth fixed at
  phase one's best (lowest loss told; the first of equals); that network joins the GA's
  first population as told, without training again. Each phase's optimizer sees only its
  own coordinates, and the space's `trainable` check of the whole vector is its cheap
  constraint, so both redraw untrainable points. A shared first population gives each phase
  its own coordinates of those points. With the other genes fixed, phase one's space is
  small (27 depths at `quick`), so DE often asks for a network again: each phase is a
  NewNetworks, the two sharing what was asked, so the search gets networks not asked before.
  """

  def __init__(self, space: space_lib.SearchSpace, seed: int, budget: int, population: int,
               options: dict[str, Any], start: Sequence[np.ndarray]):
    depth = space.depth_coordinates
    self._genes = [i for i in range(len(space.searched)) if i not in depth]
    if not depth or not self._genes:
      raise errors.UserError(
          'optimizer tpevo searches the depth, then the other genes: give space.num_cells and '
          'at least one other gene of the space more than one value')
    self._space, self._seed, self._population = space, seed, population
    self._budget, self._start = budget, start
    self.parametrization = space.parametrization(seed)
    self._phase_one_budget = min(budget, population * max(1, round(budget / 2 / population)))
    self._base = np.zeros(space.dimension)
    self._coordinates = depth
    self._check_a_depth_is_trainable()
    self._phase_one: list[tuple[Any, np.ndarray]] = []  # (loss, vector) of phase one's tells
    self._asked: dict[str, Any] = {}  # candidate uid -> (its phase, the phase's candidate)
    self._told: dict[str, Any] = {}  # shared by the phases' NewNetworks
    self._waiting: dict[str, list[tuple[Any, Any]]] = {}
    self._de = self._phase = self._new_networks(
        self._sub_optimizer(_de(population, dict(options)), self._phase_one_budget))
    self._num_asked = 0

  def _check_a_depth_is_trainable(self) -> None:
    # Each ask would cost Nevergrad's ~1000 redraws of an untrainable point times NewNetworks'
    # 100 asks anew for a network asked before: hours, for half a budget of rejections.
    genes = [self._space.searched[i] for i in self._coordinates]
    depths = [[self._space.coordinate(gene, n) for n in self._space.choices[gene]]
              for gene in genes]
    if not any(self._trainable(self._base, self._coordinates, np.array(values))
               for values in itertools.product(*depths)):
      shallowest = _compose(self._base, self._coordinates, np.array([d[0] for d in depths]))
      raise errors.UserError(
          'optimizer tpevo searches the depth first with every other gene at its middle '
          'value, and no depth of that network is trainable (the shallowest: '
          f'{self._space.violation(self._space.decode(shallowest))}): make the middle values '
          "trainable (a downsample 'none' in the middle of space.downsample, a narrower middle "
          'width) or search fewer stages')

  def _sub_optimizer(self, family, budget: int):
    """`family` over the current phase's coordinates, the others fixed at `self._base`."""
    base, coordinates = self._base.copy(), self._coordinates
    param = ng.p.Array(shape=(len(coordinates),))
    param.random_state.seed(self._seed)
    param.register_cheap_constraint(functools.partial(self._trainable, base, coordinates))
    optimizer = family(param, budget=budget, num_workers=self._population)
    start = [point[coordinates] for point in self._start
             if self._trainable(base, coordinates, point[coordinates])]
    return _with_start(optimizer, start)

  def _new_networks(self, optimizer) -> NewNetworks:
    network = functools.partial(self._network, self._base.copy(), self._coordinates)
    return NewNetworks(optimizer, network, self._told, self._waiting)

  def _trainable(self, base: np.ndarray, coordinates: list[int], values: np.ndarray) -> bool:
    return self._space.trainable(_compose(base, coordinates, values))

  def _network(self, base: np.ndarray, coordinates: list[int], values: np.ndarray) -> str:
    return self._space.decode(_compose(base, coordinates, values)).hash

  def _start_phase_two(self) -> None:
    if not self._phase_one:
      raise errors.UserError(
          'optimizer tpevo fixes the depth at the best result of its first phase, and none '
          'was told yet: use search.mode=sync, or fewer workers than half the budget')
    loss, best = min(self._phase_one, key=lambda told: np.ravel(told[0])[0])
    self._base, self._coordinates = best, self._genes
    ga = self._sub_optimizer(_ga(self._population, {}), self._budget - self._phase_one_budget)
    ga.tell(ga.parametrization.spawn_child(new_value=best[self._genes]), loss)
    self._phase = self._new_networks(ga)

  def ask(self):
    if self._num_asked == self._phase_one_budget:
      self._start_phase_two()
    self._num_asked += 1
    sub = self._phase.ask()
    candidate = self.parametrization.spawn_child(
        new_value=_compose(self._base, self._coordinates, sub.value))
    self._asked[candidate.uid] = (self._phase, sub)
    return candidate

  def tell(self, candidate, loss) -> None:
    phase, sub = self._asked.pop(candidate.uid)
    phase.tell(sub, loss)
    if phase is self._de:
      self._phase_one.append((loss, candidate.value))


def _compose(base: np.ndarray, coordinates: list[int], values: np.ndarray) -> np.ndarray:
  vector = base.copy()
  vector[coordinates] = values
  return vector


def _grid_points(options: dict[str, Any], budget: int,
                 grid: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
  unknown = set(options) - {'points'}
  if unknown:
    raise errors.UserError(f'the grid optimizer takes only search.options.points, not '
                           f'{", ".join(sorted(unknown))}')
  if 'points' not in options:
    return grid
  points = [np.asarray(p, dtype=np.float64) for p in options['points']]
  if budget > len(points):
    raise errors.UserError(f'search.budget={budget} asks for more candidates than the '
                           f'{len(points)} points in search.options.points')
  return iter(points)


def check_name(name: str) -> None:
  if name not in OPTIMIZERS:
    raise errors.UserError(
        f'unknown optimizer {name!r}; choose one of {", ".join(sorted(OPTIMIZERS))}')


def make(name: str, space: space_lib.SearchSpace, seed: int, budget: int, population: int,
         options: dict[str, Any], shared_start: bool = False, new_networks: bool = False):
  """An optimizer over `space` with Nevergrad's ask/tell interface, seeded by `seed`.

  With `shared_start`, its first asks return the seed's first generation of the space
  (`SearchSpace.first_generation`), the same for every optimizer; told, those points seed
  its population as its own first draws would. A grid asks its own points. With
  `new_networks`, it asks anew where it would repeat a network (NewNetworks); a grid never
  repeats one, and tpevo always asks anew.
  """
  check_name(name)
  if name == 'grid':
    return GridSearch(space.parametrization(seed), _grid_points(options, budget, space.grid()))
  start = space.first_generation(seed, min(population, budget)) if shared_start else []
  if name == 'tpevo':
    return DepthThenGenes(space, seed, budget, population, options, start)
  family = OPTIMIZERS[name](population, dict(options))
  optimizer = _with_start(family(space.parametrization(seed), budget=budget,
                                 num_workers=population), start)
  if not new_networks:
    return optimizer
  return NewNetworks(optimizer, lambda value: space.decode(value).hash)


def _with_start(optimizer, start: Sequence[np.ndarray]):
  es = getattr(optimizer, 'es', None)  # CMA's pycma strategy
  if start and hasattr(es, 'inject'):
    # Nevergrad tells CMA a suggested point as "not asked", which pycma refuses and Nevergrad
    # drops silently: CMA would never learn from the shared start. Injected, the points are
    # its first generation's own samples; unrepaired (force), as they are draws from its
    # initial distribution, the standard normal.
    es.inject(list(start), force=True)
    return optimizer
  for point in reversed(start):  # Nevergrad asks suggestions last in, first out
    optimizer.suggest(point)
  return optimizer
