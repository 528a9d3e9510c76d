//! The PC platform: which devices a machine has, at which ports and
//! addresses, and how their interrupt lines and clock are wired. The
//! devices themselves are state machines in `devices`; this is the
//! motherboard.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::OutputSink;
use crate::devices::apic::{self, CpuInterrupts, LocalApicHandle};
use crate::devices::clock::{Clock, Ticker, TimedPorts};
use crate::devices::ferr::{self, Ferr};
use crate::devices::ioapic::{self, IoApicHandle, SplitLine};
use crate::devices::mmio::MmioBus;
use crate::devices::pic::{self, PicHandle};
use crate::devices::{
    IrqLine, Port, PortBus, debug_exit, debugcon, fw_cfg, i8042, mptable, pci, pit, port92, post,
    rtc, serial,
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
    pub lapic: LocalApicHandle,
    pub io_apic: IoApicHandle,
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
        mmio: &mut MmioBus,
        kick: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let ticker = Ticker::new(clock.clone());
        let pic = PicHandle::new(kick.clone());
        for base in [pic::MASTER, pic::SLAVE, pic::ELCR] {
            bus.register(Port(base), 2, Box::new(pic.clone()));
        }
        let lapic = LocalApicHandle::new(clock.clone(), kick);
        lapic.attach_ticker(&ticker);
        let io_apic = IoApicHandle::new(IO_APIC_ID, Arc::new(lapic.clone()));
        let eoi_to = io_apic.clone();
        lapic.connect_eoi(Arc::new(move |v| eoi_to.eoi(v)));
        for (base, len, dev) in [
            (
                apic::DEFAULT_BASE,
                apic::MMIO_SIZE,
                Box::new(lapic.clone()) as Box<dyn crate::devices::mmio::MmioDevice + Send>,
            ),
            (
                ioapic::DEFAULT_BASE,
                ioapic::MMIO_SIZE,
                Box::new(io_apic.clone()),
            ),
        ] {
            mmio.register(base, len, dev)
                .expect("the APICs' pages are whole pages");
        }
        // An ISA interrupt request goes to its 8259 input and to the I/O
        // APIC pin the MP table gives it (IRQ 0 on pin 2).
        let isa = |irq: u8, asynchronous: bool| -> Box<dyn IrqLine> {
            let pin = if irq == 0 { 2 } else { irq };
            Box::new(if asynchronous {
                SplitLine(vec![
                    Box::new(pic.asynchronous_line(irq)),
                    Box::new(io_apic.asynchronous_line(pin)),
                ])
            } else {
                SplitLine(vec![Box::new(pic.line(irq)), Box::new(io_apic.line(pin))])
            })
        };

        let pit = Arc::new(Mutex::new(pit::Pit::new(
            clock.clone(),
            isa(pit::IRQ, true),
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

        let mut rtc = rtc::Rtc::new(clock.clone(), isa(rtc::IRQ, true), config.rtc_start);
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
                let line = isa(irq, i == 0 && config.serial_input);
                let uart = Arc::new(Mutex::new(serial::Serial::new(out, line)));
                bus.register(Port(base), serial::PORT_COUNT, Box::new(uart.clone()));
                uart
            })
            .collect();

        let keyboard = Arc::new(Mutex::new(i8042::I8042::new(
            isa(i8042::KBD_IRQ, false),
            isa(i8042::AUX_IRQ, false),
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

        let ferr = Ferr::new(isa(ferr::IRQ, false));
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
            lapic,
            io_apic,
            ferr,
            serial,
            keyboard,
            fw_cfg,
        }
    }
}

/// The I/O APIC's ID (the MP table says it).
const IO_APIC_ID: u8 = 1;
/// Where a kernel loaded without firmware finds the MP table: the last
/// KiB of conventional memory, which the e820 map reserves.
pub const MP_TABLE: u32 = 0x9_FC00;

impl Platform {
    /// The machine was reset: the interrupt controllers go to their
    /// power-on state, or (`bios`) as a PC BIOS leaves them for a guest
    /// loaded without one.
    pub fn reset(&self, bios: bool) {
        self.pic.reset(bios);
        self.lapic.reset(bios);
        self.io_apic.reset();
    }

    /// What the CPU takes its interrupts from: the local APIC, with the
    /// 8259 behind its LINT0 and the I/O APIC sending to it.
    pub fn interrupt_controller(&self) -> Box<dyn crate::devices::InterruptController> {
        Box::new(CpuInterrupts::new(
            self.lapic.clone(),
            Box::new(self.pic.clone()),
            Some(self.io_apic.clone()),
        ))
    }

    /// The MP table that describes the APICs to a kernel loaded without
    /// firmware (placed at [`MP_TABLE`]).
    pub fn mp_table(&self) -> Vec<u8> {
        mptable::build(
            MP_TABLE,
            IO_APIC_ID,
            ioapic::DEFAULT_BASE,
            apic::DEFAULT_BASE,
        )
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
