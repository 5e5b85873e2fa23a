//! The client network of a simulated cluster: [`ClientNet`] and its [`SimConnector`], generic
//! over the request and reply types (the KV protocol's by default; the shard controller's
//! harness carries its own protocol on the same network).

use super::*;

type Handler<Req, Rep> =
    Arc<dyn Fn(Req) -> Pin<Box<dyn Future<Output = Rep> + Send>> + Send + Sync>;

/// How the client network behaves.
#[derive(Clone, Copy, Debug)]
pub struct ClientNetConfig {
    /// One-way latency, virtual ms (inclusive range).
    pub latency_ms: (u64, u64),
    /// Chance that a request is lost before reaching the server.
    pub drop_request: f64,
    /// Chance that a reply is lost on its way back.
    pub drop_reply: f64,
    /// Of the drops, the fraction that never answer (the Clerk's attempt timeout ends them);
    /// the others answer `Lost` after up to 100 ms, like labrpc's `false`.
    pub silent_fraction: f64,
    /// Chance that a request is held up to `long_delay_ms` more: it may reach the server long
    /// after the Clerk gave up on it and moved on.
    pub long_delay_chance: f64,
    pub long_delay_ms: u64,
    /// Chance that a request is delivered twice (the second copy a little later).
    pub duplicate_chance: f64,
}

impl ClientNetConfig {
    pub fn reliable() -> Self {
        Self {
            latency_ms: (1, 3),
            drop_request: 0.0,
            drop_reply: 0.0,
            silent_fraction: 0.0,
            long_delay_chance: 0.0,
            long_delay_ms: 0,
            duplicate_chance: 0.0,
        }
    }

    /// labrpc's unreliable mode: up to 27 ms of delay, 10% of requests and 10% of replies lost.
    pub fn unreliable() -> Self {
        Self {
            latency_ms: (1, 27),
            drop_request: 0.1,
            drop_reply: 0.1,
            silent_fraction: 0.2,
            ..Self::reliable()
        }
    }

    /// Beyond labrpc: also requests held up to 3 s, which may reach a server after the Clerk
    /// gave up on them, and requests delivered twice.
    pub fn hostile() -> Self {
        Self {
            long_delay_chance: 0.03,
            long_delay_ms: 3_000,
            duplicate_chance: 0.03,
            ..Self::unreliable()
        }
    }
}

/// What the client network did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientNetStats {
    pub calls: u64,
    pub served: u64,
    pub dropped_requests: u64,
    pub dropped_replies: u64,
    pub unreachable: u64,
    /// Requests dropped because their server crashed while serving them.
    pub lost_in_crash: u64,
    pub delayed: u64,
    pub duplicated: u64,
}

struct Server<Req, Rep> {
    group: u64,
    handler: Handler<Req, Rep>,
}

struct ClientNetInner<Req, Rep> {
    servers: BTreeMap<String, Server<Req, Rep>>,
    /// client → the addresses it is connected to.
    reach: BTreeMap<u64, BTreeSet<String>>,
    config: ClientNetConfig,
    next_client: u64,
    stats: ClientNetStats,
}

/// How a call ended, as the network tells the caller.
enum Delivery<Rep> {
    Answer(Result<Rep, CallError>),
    /// Lost without a trace: the caller waits until it gives up.
    Silent,
}

/// The network between clients and servers speaking `Req` and `Rep` (by default the KV
/// protocol). Clones share it.
///
/// A call is carried by a task of its own (in [`NET_GROUP`], never killed): a request keeps
/// travelling after the Clerk abandons it, and may reach the server later.
pub struct ClientNet<Req = RequestBody, Rep = Reply> {
    rt: SimRuntime,
    inner: Arc<Mutex<ClientNetInner<Req, Rep>>>,
}

impl<Req, Rep> Clone for ClientNet<Req, Rep> {
    fn clone(&self) -> Self {
        Self {
            rt: self.rt.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// The runtime group of the client network's delivery tasks (never killed).
pub const NET_GROUP: u64 = CLIENT_GROUP + 1;

impl ClientNet {
    /// Serves `addr` with `service`, whose tasks run in runtime group `group`.
    pub fn register<M: StateMachine<Response = Outcome>>(
        &self,
        addr: &str,
        group: u64,
        service: KvService<SimRuntime, M>,
    ) {
        self.serve(addr, group, move |body| {
            let service = service.clone();
            async move { service.handle(body).await }
        });
    }
}

impl<Req: Clone + Send + 'static, Rep: Send + 'static> ClientNet<Req, Rep> {
    pub fn new(rt: &SimRuntime) -> Self {
        Self {
            rt: rt.with_group(NET_GROUP),
            inner: Arc::new(Mutex::new(ClientNetInner {
                servers: BTreeMap::new(),
                reach: BTreeMap::new(),
                config: ClientNetConfig::reliable(),
                next_client: 0,
                stats: ClientNetStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClientNetInner<Req, Rep>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> ClientNetConfig {
        self.lock().config
    }

    pub fn set_config(&self, config: ClientNetConfig) {
        self.lock().config = config;
    }

    pub fn stats(&self) -> ClientNetStats {
        self.lock().stats
    }

    /// Serves `addr` with `handle`, whose tasks run in runtime group `group`.
    pub fn serve<F, Fut>(&self, addr: &str, group: u64, handle: F)
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Rep> + Send + 'static,
    {
        let handler: Handler<Req, Rep> = Arc::new(move |body| Box::pin(handle(body)));
        self.lock()
            .servers
            .insert(addr.to_string(), Server { group, handler });
    }

    /// `addr` is down: calls to it are `Unreachable`.
    pub fn unregister(&self, addr: &str) {
        self.lock().servers.remove(addr);
    }

    /// A connector for a new client connected to `addrs`.
    pub fn connector(&self, addrs: &[String]) -> SimConnector<Req, Rep> {
        let mut n = self.lock();
        let client = n.next_client;
        n.next_client += 1;
        n.reach.insert(client, addrs.iter().cloned().collect());
        SimConnector {
            net: self.clone(),
            client,
        }
    }

    /// Connects `client` to exactly `addrs` (the lab's `ConnectClient`).
    pub fn connect(&self, client: u64, addrs: &[String]) {
        self.lock()
            .reach
            .insert(client, addrs.iter().cloned().collect());
    }

    fn latency(&self, config: &ClientNetConfig) -> Duration {
        ms(self.rt.random(config.latency_ms.0, config.latency_ms.1 + 1))
    }

    fn reachable(&self, client: u64, addr: &str) -> bool {
        self.lock()
            .reach
            .get(&client)
            .is_some_and(|r| r.contains(addr))
    }

    /// A lost message: `Lost` after a while, or no answer at all.
    async fn dropped(&self, addr: String, config: ClientNetConfig) -> Delivery<Rep> {
        if self.rt.chance(config.silent_fraction) {
            return Delivery::Silent;
        }
        self.rt.sleep(ms(self.rt.random(0, 100))).await;
        Delivery::Answer(Err(CallError::Lost {
            addr,
            reason: LostReason::Dropped,
        }))
    }

    async fn call(&self, client: u64, addr: String, body: Req) -> Result<Rep, CallError> {
        let config = self.config();
        self.lock().stats.calls += 1;
        if self.rt.chance(config.duplicate_chance) {
            self.lock().stats.duplicated += 1;
            let (net, addr, body) = (self.clone(), addr.clone(), body.clone());
            let extra = ms(self.rt.random(0, 50));
            self.rt.spawn(async move {
                net.rt.sleep(extra).await;
                let _ = net.deliver(client, addr, body, config).await;
            });
        }
        let (tx, rx) = oneshot::channel();
        let net = self.clone();
        self.rt.spawn(async move {
            let _ = tx.send(net.deliver(client, addr, body, config).await);
        });
        match rx.await {
            Ok(Delivery::Answer(answer)) => answer,
            Ok(Delivery::Silent) | Err(_) => futures::future::pending().await,
        }
    }

    /// Carries one request to its server and the reply back.
    async fn deliver(
        &self,
        client: u64,
        addr: String,
        body: Req,
        config: ClientNetConfig,
    ) -> Delivery<Rep> {
        let mut delay = self.latency(&config);
        if self.rt.chance(config.long_delay_chance) {
            self.lock().stats.delayed += 1;
            delay += ms(self.rt.random(0, config.long_delay_ms + 1));
        }
        self.rt.sleep(delay).await;
        let server = {
            let n = self.lock();
            let connected = n.reach.get(&client).is_some_and(|r| r.contains(&addr));
            match n.servers.get(&addr) {
                Some(s) if connected => Ok((s.group, s.handler.clone())),
                Some(_) => Err(UnreachableReason::Partitioned),
                None => Err(UnreachableReason::Down),
            }
        };
        let (group, handler) = match server {
            Ok(server) => server,
            Err(reason) => {
                self.lock().stats.unreachable += 1;
                return Delivery::Answer(Err(CallError::Unreachable { addr, reason }));
            }
        };
        if self.rt.chance(config.drop_request) {
            self.lock().stats.dropped_requests += 1;
            return self.dropped(addr, config).await;
        }
        // Served by the server's group: a crash drops the request mid-flight.
        let (tx, rx) = oneshot::channel();
        self.rt.with_group(group).spawn(async move {
            let _ = tx.send(handler(body).await);
        });
        let Ok(reply) = rx.await else {
            self.lock().stats.lost_in_crash += 1;
            return Delivery::Answer(Err(CallError::Lost {
                addr,
                reason: LostReason::Crashed,
            }));
        };
        self.rt.sleep(self.latency(&config)).await;
        if !self.reachable(client, &addr) || self.rt.chance(config.drop_reply) {
            self.lock().stats.dropped_replies += 1;
            return self.dropped(addr, config).await;
        }
        self.lock().stats.served += 1;
        Delivery::Answer(Ok(reply))
    }
}

/// One client's end of the [`ClientNet`].
pub struct SimConnector<Req = RequestBody, Rep = Reply> {
    net: ClientNet<Req, Rep>,
    client: u64,
}

impl<Req: Clone + Send + 'static, Rep: Send + 'static> SimConnector<Req, Rep> {
    pub fn client(&self) -> u64 {
        self.client
    }

    /// Sends `body` to `addr` through the network (what a connector's `call` does).
    pub fn send(
        &self,
        addr: &str,
        body: Req,
    ) -> impl Future<Output = Result<Rep, CallError>> + Send + 'static {
        let net = self.net.clone();
        let client = self.client;
        let addr = addr.to_string();
        async move { net.call(client, addr, body).await }
    }
}

impl<Req: Clone + Send + 'static, Rep: Send + 'static> Connector<Req, Rep>
    for SimConnector<Req, Rep>
{
    fn call(&self, addr: &str, body: Req) -> impl Future<Output = Result<Rep, CallError>> + Send {
        self.send(addr, body)
    }
}
