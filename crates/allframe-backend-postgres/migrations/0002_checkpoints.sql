-- AllFrame CQRS event store, version 2: named checkpoints (contract point 14), the position
-- each consumer of the log (a projection, a saga) has processed. Saves are compare-and-set:
-- an INSERT that does nothing when the name exists, or an UPDATE conditioned on the expected
-- position.
CREATE TABLE checkpoints (
    name text COLLATE "C" PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
