"""Optimizer registry: names in experiment configs -> Nevergrad optimizers.

Each factory takes the parametrization, the evaluation budget, the population (candidates
asked per batch, also Nevergrad's `num_workers`) and the config's `search.options`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import nevergrad as ng
import numpy as np

from nas import errors


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


def _de_ga(population: int, options: dict[str, Any]):
  """Differential evolution for the first half of the budget, then a genetic algorithm (TPEvo)."""
  return ng.families.Chaining([_de(population, options), _ga(population, {})], ['half'])


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
    'de_ga': _de_ga,
    'oneplusone': _registered('OnePlusOne'),
    'discrete_oneplusone': _registered('DiscreteOnePlusOne'),
    'portfolio_discrete_oneplusone': _registered('PortfolioDiscreteOnePlusOne'),
    'ngopt': _registered('NGOpt'),
    'random': _registered('RandomSearch'),
    'grid': None,  # exhaustive enumeration, or a declared list of points; see GridSearch
}


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


def _grid_points(options: dict[str, Any], budget: int,
                 grid: Iterator[np.ndarray] | None) -> Iterator[np.ndarray]:
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


def make(name: str, parametrization: ng.p.Array, budget: int, population: int,
         options: dict[str, Any], grid: Iterator[np.ndarray] | None = None,
         start: Sequence[np.ndarray] = ()):
  """An optimizer with Nevergrad's ask/tell interface, seeded by the parametrization.

  Its first asks return the points of `start`, in order (a grid asks its own points); told,
  they seed its population as its own first draws would.
  """
  if name not in OPTIMIZERS:
    raise errors.UserError(
        f'unknown optimizer {name!r}; choose one of {", ".join(sorted(OPTIMIZERS))}')
  if name == 'grid':
    return GridSearch(parametrization, _grid_points(options, budget, grid))
  factory = OPTIMIZERS[name](population, dict(options))
  optimizer = factory(parametrization, budget=budget, num_workers=population)
  for point in reversed(start):  # Nevergrad asks suggestions last in, first out
    optimizer.suggest(point)
  return optimizer
