//! Export tests: the OTLP encoder, and the exporters against real receivers (all on 127.0.0.1,
//! ports chosen by the kernel).

mod encode;
mod otlp;
mod outage;
mod prometheus;
mod rotel;
mod tls;
mod zipkin;
