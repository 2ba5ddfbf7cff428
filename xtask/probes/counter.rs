// The counter of the command-layer size probes (`include!`d by each): one event, one aggregate.

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Event)]
enum CounterEvent {
    Bumped { by: u32 },
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counter {
    total: u64,
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    fn apply(&mut self, CounterEvent::Bumped { by }: &CounterEvent) {
        self.total += u64::from(*by);
    }
}
