//! The PC platform: which devices a machine has, at which ports and
//! addresses, and how their interrupt lines and clock are wired. The
//! devices themselves are state machines in `devices`; this is the
//! motherboard.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::OutputSink;
use crate::devices::clock::{Clock, Ticker, TimedPorts};
use crate::devices::ferr::{self, Ferr};
use crate::devices::pic::{self, PicHandle};
use crate::devices::{
    Port, PortBus, debug_exit, debugcon, fw_cfg, i8042, pci, pit, port92, post, rtc, serial,
};

/// What the platform is built from (the device part of `MachineConfig`).
pub struct PcConfig {
    pub ram_size: usize,
    /// COM1-COM4, in order (missing ones write nowhere).
    pub serial: Vec<OutputSink>,
    /// Host input reaches COM1: its interrupt can come at any time, so
    /// `hlt` waits for it.
    pub serial_input: bool,
    pub debugcon: OutputSink,
    pub debugcon_port: u16,
    pub rtc_start: rtc::StartTime,
}

/// The devices the machine talks to directly (the rest only live on the
/// buses).
pub struct Platform {
    pub clock: Clock,
    /// Raises the timers' interrupts at their deadlines; stops with the
    /// platform.
    _ticker: Ticker,
    pub pic: PicHandle,
    pub ferr: Ferr,
    pub serial: Vec<Arc<Mutex<serial::Serial>>>,
    pub keyboard: Arc<Mutex<i8042::I8042>>,
    pub fw_cfg: Arc<Mutex<fw_cfg::FwCfg>>,
}

fn writer(sink: OutputSink) -> Box<dyn Write + Send> {
    match sink {
        OutputSink::Stdout => Box::new(std::io::stdout()),
        OutputSink::Writer(w) => w,
        OutputSink::None => Box::new(std::io::sink()),
    }
}

impl Platform {
    /// Builds the devices, their time from `clock`, and registers them on
    /// `bus`. `kick` wakes the
    /// CPU (ends its TU, or its hlt) when an interrupt request appears.
    pub fn build(
        config: PcConfig,
        clock: Clock,
        bus: &mut PortBus,
        kick: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let ticker = Ticker::new(clock.clone());
        let pic = PicHandle::new(kick);
        for base in [pic::MASTER, pic::SLAVE, pic::ELCR] {
            bus.register(Port(base), 2, Box::new(pic.clone()));
        }

        let pit = Arc::new(Mutex::new(pit::Pit::new(
            clock.clone(),
            Box::new(pic.asynchronous_line(pit::IRQ)),
        )));
        ticker.add(pit.clone());
        bus.register(
            Port(pit::BASE),
            pit::PORT_COUNT,
            Box::new(TimedPorts::new(pit.clone(), ticker.handle())),
        );
        bus.register(
            Port(pit::SPEAKER_PORT),
            1,
            Box::new(TimedPorts::new(pit, ticker.handle())),
        );

        let mut rtc = rtc::Rtc::new(
            clock.clone(),
            Box::new(pic.asynchronous_line(rtc::IRQ)),
            config.rtc_start,
        );
        rtc.set_memory_size(config.ram_size as u64);
        rtc.set_cpu_count(1);
        let rtc = Arc::new(Mutex::new(rtc));
        ticker.add(rtc.clone());
        bus.register(
            Port(rtc::BASE),
            rtc::PORT_COUNT,
            Box::new(TimedPorts::new(rtc, ticker.handle())),
        );

        let mut sinks = config.serial.into_iter();
        let serial: Vec<_> = serial::PORTS
            .iter()
            .enumerate()
            .map(|(i, &(base, irq))| {
                let out = writer(sinks.next().unwrap_or(OutputSink::None));
                let line = if i == 0 && config.serial_input {
                    pic.asynchronous_line(irq)
                } else {
                    pic.line(irq)
                };
                let uart = Arc::new(Mutex::new(serial::Serial::new(out, Box::new(line))));
                bus.register(Port(base), serial::PORT_COUNT, Box::new(uart.clone()));
                uart
            })
            .collect();

        let keyboard = Arc::new(Mutex::new(i8042::I8042::new(
            Box::new(pic.line(i8042::KBD_IRQ)),
            Box::new(pic.line(i8042::AUX_IRQ)),
        )));
        bus.register(Port(i8042::DATA_PORT), 1, Box::new(keyboard.clone()));
        bus.register(Port(i8042::COMMAND_PORT), 1, Box::new(keyboard.clone()));

        let pci = Arc::new(Mutex::new(pci::PciBus::new()));
        bus.register(Port(pci::CONFIG_ADDRESS), 4, Box::new(pci.clone()));
        bus.register(Port(pci::CONFIG_DATA), 4, Box::new(pci));

        let fw_cfg = Arc::new(Mutex::new(fw_cfg::FwCfg::new()));
        bus.register(
            Port(fw_cfg::SELECTOR_PORT),
            fw_cfg::PORT_COUNT,
            Box::new(fw_cfg.clone()),
        );

        let ferr = Ferr::new(Box::new(pic.line(ferr::IRQ)));
        bus.register(Port(ferr::PORT), 1, Box::new(ferr.clone()));
        bus.register(
            Port(port92::PORT),
            1,
            Box::new(port92::SystemControlA::default()),
        );
        bus.register(Port(post::PORT), 1, Box::new(post::Post::default()));
        bus.register(
            Port(debug_exit::DEFAULT_PORT),
            debug_exit::PORT_COUNT,
            Box::new(debug_exit::DebugExit),
        );
        if !matches!(config.debugcon, OutputSink::None) {
            bus.register(
                Port(config.debugcon_port),
                1,
                Box::new(debugcon::DebugCon::new(writer(config.debugcon))),
            );
        }
        Platform {
            clock,
            _ticker: ticker,
            pic,
            ferr,
            serial,
            keyboard,
            fw_cfg,
        }
    }
}

/// Host input for a guest's serial port, usable from any thread.
#[derive(Clone)]
pub struct SerialInput(Arc<Mutex<serial::Serial>>);

impl SerialInput {
    pub fn new(uart: Arc<Mutex<serial::Serial>>) -> Self {
        SerialInput(uart)
    }

    pub fn send(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .input(bytes);
    }
}
