//! TotalView-ITCH 5.0: the 23 messages, read in place from the receive buffer.
//!
//! [`parse`] takes the bytes of one message (the length prefix already stripped by the framing:
//! MoldUDP64 block or BinaryFILE record) and returns a [`Message`] that borrows them. Nothing is
//! copied or allocated; a wrong length or an unknown type is an [`ItchError`], never a panic.
//! The length prefix is the truth: a caller skips a bad message by its length and goes on.
//!
//! Encoding is the other direction of the same structs: build a wire struct (see
//! [`messages`]) and take its bytes with [`encode`] or `zerocopy::IntoBytes::as_bytes`.

pub mod messages;
pub mod types;

pub use messages::*;
pub use types::{Alpha, Stock, U16, U32, U48, U64};

use core::fmt;
use zerocopy::{FromBytes, IntoBytes};

macro_rules! message_set {
    ($($variant:ident($ty:ident) => $on:ident),* $(,)?) => {
        /// One decoded ITCH message, borrowing the buffer it was read from.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Message<'a> {
            $(
                #[doc = concat!("See [`", stringify!($ty), "`].")]
                $variant(&'a $ty),
            )*
        }

        /// The length of each message type, indexed by type byte; 0 for unknown types.
        pub const LEN_BY_TYPE: [u8; 256] = {
            let mut t = [0u8; 256];
            $( t[<$ty as ItchMessage>::TYPE as usize] = core::mem::size_of::<$ty>() as u8; )*
            t
        };

        /// Every type byte of ITCH 5.0, in the order of the specification's tables.
        pub const ALL_TYPES: &[u8] = &[$(<$ty as ItchMessage>::TYPE),*];

        /// Reads one message in place. `bytes` must be exactly one message, as delimited by
        /// the framing's length prefix.
        #[inline]
        pub fn parse(bytes: &[u8]) -> Result<Message<'_>, ItchError> {
            let Some(&msg_type) = bytes.first() else { return Err(ItchError::Empty) };
            match msg_type {
                $(
                    <$ty as ItchMessage>::TYPE => match $ty::ref_from_bytes(bytes) {
                        Ok(m) => Ok(Message::$variant(m)),
                        Err(_) => Err(ItchError::LengthMismatch {
                            msg_type,
                            expected: core::mem::size_of::<$ty>(),
                            actual: bytes.len(),
                        }),
                    },
                )*
                _ => Err(ItchError::UnknownType { msg_type, len: bytes.len() }),
            }
        }

        /// Receives decoded messages from [`dispatch`], one method per type; every method
        /// defaults to doing nothing. Dispatching straight to a method costs one branch on the
        /// type byte, where [`parse`] then `match` costs two.
        pub trait Handler {
            $(
                #[doc = concat!("A [`", stringify!($ty), "`].")]
                #[inline]
                fn $on(&mut self, m: &$ty) { let _ = m; }
            )*
            /// A message that could not be read (counted and skipped by the caller).
            #[inline]
            fn on_error(&mut self, e: ItchError) { let _ = e; }
        }

        /// Reads one message in place and hands it to the handler's method for its type.
        #[inline]
        pub fn dispatch<H: Handler + ?Sized>(bytes: &[u8], h: &mut H) {
            let Some(&msg_type) = bytes.first() else { return h.on_error(ItchError::Empty) };
            match msg_type {
                $(
                    <$ty as ItchMessage>::TYPE => match $ty::ref_from_bytes(bytes) {
                        Ok(m) => h.$on(m),
                        Err(_) => h.on_error(ItchError::LengthMismatch {
                            msg_type,
                            expected: core::mem::size_of::<$ty>(),
                            actual: bytes.len(),
                        }),
                    },
                )*
                _ => h.on_error(ItchError::UnknownType { msg_type, len: bytes.len() }),
            }
        }

        impl<'a> Message<'a> {
            /// The common header.
            #[inline]
            pub fn header(&self) -> &'a Header {
                match *self { $(Message::$variant(m) => &m.header,)* }
            }

            /// The message's bytes (what was parsed; what an encoder writes).
            #[inline]
            pub fn as_bytes(&self) -> &'a [u8] {
                match *self { $(Message::$variant(m) => m.as_bytes(),)* }
            }
        }

        $(
            impl<'a> From<&'a $ty> for Message<'a> {
                fn from(m: &'a $ty) -> Self { Message::$variant(m) }
            }
        )*
    };
}

message_set! {
    SystemEvent(SystemEvent) => on_system_event,
    StockDirectory(StockDirectory) => on_stock_directory,
    StockTradingAction(StockTradingAction) => on_stock_trading_action,
    RegShoRestriction(RegShoRestriction) => on_reg_sho_restriction,
    MarketParticipantPosition(MarketParticipantPosition) => on_market_participant_position,
    MwcbDeclineLevel(MwcbDeclineLevel) => on_mwcb_decline_level,
    MwcbStatus(MwcbStatus) => on_mwcb_status,
    IpoQuotingPeriod(IpoQuotingPeriod) => on_ipo_quoting_period,
    LuldAuctionCollar(LuldAuctionCollar) => on_luld_auction_collar,
    OperationalHalt(OperationalHalt) => on_operational_halt,
    AddOrder(AddOrder) => on_add_order,
    AddOrderMpid(AddOrderMpid) => on_add_order_mpid,
    OrderExecuted(OrderExecuted) => on_order_executed,
    OrderExecutedWithPrice(OrderExecutedWithPrice) => on_order_executed_with_price,
    OrderCancel(OrderCancel) => on_order_cancel,
    OrderDelete(OrderDelete) => on_order_delete,
    OrderReplace(OrderReplace) => on_order_replace,
    Trade(Trade) => on_trade,
    CrossTrade(CrossTrade) => on_cross_trade,
    BrokenTrade(BrokenTrade) => on_broken_trade,
    Noii(Noii) => on_noii,
    RetailInterest(RetailInterest) => on_retail_interest,
    DirectListingCapitalRaise(DirectListingCapitalRaise) => on_direct_listing_capital_raise,
}

impl Message<'_> {
    /// The type byte.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.header().msg_type
    }
    /// The stock locate of the header.
    #[inline]
    pub fn stock_locate(&self) -> u16 {
        self.header().stock_locate.get()
    }
    /// The exchange timestamp, nanoseconds since midnight.
    #[inline]
    pub fn timestamp_ns(&self) -> u64 {
        self.header().timestamp_ns.get()
    }
}

/// The expected length of a message type, or `None` if the type is not ITCH 5.0.
#[inline]
pub fn expected_len(msg_type: u8) -> Option<usize> {
    match LEN_BY_TYPE[msg_type as usize] {
        0 => None,
        n => Some(n as usize),
    }
}

/// The exchange timestamp (ns since midnight) of a message's bytes, whatever its type, or
/// `None` if it is too short to have a header.
#[inline]
pub fn timestamp_of(msg: &[u8]) -> Option<u64> {
    let b: [u8; 6] = msg.get(5..11)?.try_into().ok()?;
    Some(U48(b).get())
}

/// Appends the bytes of `msg` to `out`.
#[inline]
pub fn encode<M: ItchMessage>(msg: &M, out: &mut Vec<u8>) {
    out.extend_from_slice(msg.as_bytes());
}

/// Why a message could not be read. The caller counts it and skips the message by its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItchError {
    /// A zero-length message.
    Empty,
    /// A type byte that ITCH 5.0 does not define (newer feeds add types: skip by length).
    UnknownType {
        /// The type byte.
        msg_type: u8,
        /// The length the framing gave.
        len: usize,
    },
    /// A known type whose framing length is not the type's length.
    LengthMismatch {
        /// The type byte.
        msg_type: u8,
        /// The type's length.
        expected: usize,
        /// The length the framing gave.
        actual: usize,
    },
}

impl fmt::Display for ItchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ItchError::Empty => write!(f, "empty ITCH message"),
            ItchError::UnknownType { msg_type, len } => {
                write!(
                    f,
                    "unknown ITCH message type {} ({len} bytes)",
                    type_name(msg_type)
                )
            }
            ItchError::LengthMismatch {
                msg_type,
                expected,
                actual,
            } => write!(
                f,
                "ITCH message type {} is {actual} bytes, expected {expected}",
                type_name(msg_type)
            ),
        }
    }
}

impl std::error::Error for ItchError {}

/// A printable form of a type byte: `'A'`, or `0x07` for a non-graphic byte.
pub fn type_name(msg_type: u8) -> String {
    if msg_type.is_ascii_graphic() {
        format!("'{}'", msg_type as char)
    } else {
        format!("0x{msg_type:02x}")
    }
}

/// Counts of decoded messages by type and of the errors met, for a stream.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageCounts {
    /// Messages read, indexed by type byte.
    pub by_type: [u64; 256],
    /// Messages with a type ITCH 5.0 does not define.
    pub unknown_type: u64,
    /// Messages whose length is wrong for their type (including empty ones).
    pub length_mismatch: u64,
}

impl Default for MessageCounts {
    fn default() -> Self {
        MessageCounts {
            by_type: [0; 256],
            unknown_type: 0,
            length_mismatch: 0,
        }
    }
}

impl fmt::Debug for MessageCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (t, n) in self.iter() {
            m.entry(&(t as char), &n);
        }
        m.entry(&"unknown_type", &self.unknown_type);
        m.entry(&"length_mismatch", &self.length_mismatch);
        m.finish()
    }
}

impl MessageCounts {
    /// Parses `bytes` and counts the outcome; returns the message when it was good.
    #[inline]
    pub fn parse<'a>(&mut self, bytes: &'a [u8]) -> Option<Message<'a>> {
        match parse(bytes) {
            Ok(m) => {
                self.by_type[m.msg_type() as usize] += 1;
                Some(m)
            }
            Err(ItchError::UnknownType { .. }) => {
                self.unknown_type += 1;
                None
            }
            Err(_) => {
                self.length_mismatch += 1;
                None
            }
        }
    }

    /// Good messages counted.
    pub fn total(&self) -> u64 {
        self.by_type.iter().sum()
    }

    /// Bad messages counted.
    pub fn errors(&self) -> u64 {
        self.unknown_type + self.length_mismatch
    }

    /// `(type byte, count)` for each type seen, in type-byte order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.by_type
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (t as u8, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_all_23_types_with_spec_lengths() {
        let spec: &[(u8, usize)] = &[
            (b'S', 12),
            (b'R', 39),
            (b'H', 25),
            (b'Y', 20),
            (b'L', 26),
            (b'V', 35),
            (b'W', 12),
            (b'K', 28),
            (b'J', 35),
            (b'h', 21),
            (b'A', 36),
            (b'F', 40),
            (b'E', 31),
            (b'C', 36),
            (b'X', 23),
            (b'D', 19),
            (b'U', 35),
            (b'P', 44),
            (b'Q', 40),
            (b'B', 19),
            (b'I', 50),
            (b'N', 20),
            (b'O', 48),
        ];
        assert_eq!(ALL_TYPES.len(), 23);
        for &(t, len) in spec {
            assert_eq!(expected_len(t), Some(len), "type {}", t as char);
        }
        assert_eq!(LEN_BY_TYPE.iter().filter(|&&l| l != 0).count(), 23);
    }

    #[test]
    fn unknown_and_short_messages_are_errors_not_panics() {
        assert_eq!(parse(&[]), Err(ItchError::Empty));
        assert_eq!(
            parse(b"Z1234"),
            Err(ItchError::UnknownType {
                msg_type: b'Z',
                len: 5
            })
        );
        assert_eq!(
            parse(&[b'A'; 35]),
            Err(ItchError::LengthMismatch {
                msg_type: b'A',
                expected: 36,
                actual: 35
            })
        );
        assert_eq!(
            parse(&[b'S'; 13]),
            Err(ItchError::LengthMismatch {
                msg_type: b'S',
                expected: 12,
                actual: 13
            })
        );
        // every type at every short length
        for &t in ALL_TYPES {
            let len = expected_len(t).unwrap();
            for l in 1..len {
                let mut b = vec![0u8; l];
                b[0] = t;
                assert!(parse(&b).is_err());
            }
        }
    }

    #[test]
    fn dispatch_calls_the_method_of_the_type() {
        #[derive(Default)]
        struct H {
            deletes: Vec<u64>,
            errors: Vec<ItchError>,
        }
        impl Handler for H {
            fn on_order_delete(&mut self, m: &OrderDelete) {
                self.deletes.push(m.order_ref.get());
            }
            fn on_error(&mut self, e: ItchError) {
                self.errors.push(e);
            }
        }
        let mut h = H::default();
        let d = OrderDelete {
            header: Header::new(b'D', 1, 0, 5),
            order_ref: 9.into(),
        };
        dispatch(d.as_bytes(), &mut h);
        dispatch(&d.as_bytes()[..10], &mut h);
        dispatch(b"Z", &mut h);
        dispatch(&[], &mut h);
        let s = SystemEvent {
            header: Header::new(b'S', 0, 0, 1),
            event_code: b'O',
        };
        dispatch(s.as_bytes(), &mut h); // default method: ignored
        assert_eq!(h.deletes, vec![9]);
        assert_eq!(h.errors.len(), 3);
    }

    #[test]
    fn counts_tally_good_and_bad() {
        let mut c = MessageCounts::default();
        let d = OrderDelete {
            header: Header::new(b'D', 1, 0, 5),
            order_ref: 9.into(),
        };
        assert!(c.parse(d.as_bytes()).is_some());
        assert_eq!(timestamp_of(d.as_bytes()), Some(5));
        assert_eq!(timestamp_of(&d.as_bytes()[..10]), None);
        assert!(c.parse(b"Zxx").is_none());
        assert!(c.parse(b"Dxx").is_none());
        assert_eq!(c.total(), 1);
        assert_eq!(c.by_type[b'D' as usize], 1);
        assert_eq!((c.unknown_type, c.length_mismatch, c.errors()), (1, 1, 2));
    }
}
