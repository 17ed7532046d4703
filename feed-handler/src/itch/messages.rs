//! The 23 TotalView-ITCH 5.0 messages as wire structs, named and ordered as in the
//! specification (revision 2023-04-28). Each struct *is* the bytes on the wire: `#[repr(C)]`,
//! alignment 1, no padding, size equal to the message length. Reading one is a bounds check
//! and a pointer cast; every field is read in place.
//!
//! Units are in the names: `_ns` nanoseconds since midnight, `_e4` ITCH Price(4) (1e-4 dollars),
//! `_e8` Price(8) (1e-8 dollars). One-byte codes are kept as raw ASCII `u8`; their values are
//! listed on each field.

use super::types::{Alpha, Stock, U16, U32, U48, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The 11 bytes every message starts with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// The message type byte (`b'A'`, ...).
    pub msg_type: u8,
    /// Day-scoped instrument index from the Stock Directory; 0 = not instrument-specific.
    pub stock_locate: U16,
    /// Nasdaq-internal tracking number.
    pub tracking_number: U16,
    /// Nanoseconds since midnight.
    pub timestamp_ns: U48,
}

impl Header {
    /// A header for a message of type `msg_type`.
    pub fn new(msg_type: u8, stock_locate: u16, tracking_number: u16, timestamp_ns: u64) -> Self {
        Header {
            msg_type,
            stock_locate: stock_locate.into(),
            tracking_number: tracking_number.into(),
            timestamp_ns: U48::new(timestamp_ns),
        }
    }
}

/// A wire struct of one ITCH message type.
pub trait ItchMessage: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Copy {
    /// The type byte.
    const TYPE: u8;
    /// The message length in bytes (what the length prefix must say).
    const LEN: usize = core::mem::size_of::<Self>();
    /// The common header.
    fn header(&self) -> &Header;
}

macro_rules! wire {
    ($(#[$doc:meta])* $name:ident = $ty:literal, $len:literal { $($(#[$fdoc:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
        #[repr(C)]
        pub struct $name {
            /// Common header; `msg_type` is
            #[doc = concat!("`b'", $ty, "'`.")]
            pub header: Header,
            $($(#[$fdoc])* pub $f: $t,)*
        }
        const _: () = assert!(core::mem::size_of::<$name>() == $len, "wire size differs from the spec");
        impl ItchMessage for $name {
            const TYPE: u8 = $ty.as_bytes()[0];
            #[inline]
            fn header(&self) -> &Header { &self.header }
        }
    };
}

wire! {
    /// `S` System Event.
    SystemEvent = "S", 12 {
        /// O start of messages, S start of system hours, Q start of market hours,
        /// M end of market hours, E end of system hours, C end of messages.
        pub event_code: u8,
    }
}

wire! {
    /// `R` Stock Directory: one per instrument at the start of the day; gives the locate.
    StockDirectory = "R", 39 {
        /// The symbol.
        pub stock: Stock,
        /// Q G S (Nasdaq tiers), N NYSE, A NYSE American, P NYSE Arca, Z Cboe BZX, V IEX, ' '.
        pub market_category: u8,
        /// D E Q S G H J K C N or ' '.
        pub financial_status: u8,
        /// Shares per round lot.
        pub round_lot_size: U32,
        /// Y only round lots accepted, N odd and mixed lots too.
        pub round_lots_only: u8,
        /// Issue classification code (A B C F I L N O P Q R S T U V W).
        pub issue_classification: u8,
        /// Issue sub-type code (two letters, space padded).
        pub issue_sub_type: Alpha<2>,
        /// P live/production, T test.
        pub authenticity: u8,
        /// Y N or ' '.
        pub short_sale_threshold: u8,
        /// Y N or ' '.
        pub ipo_flag: u8,
        /// 1 or 2 (tier), ' ' n/a.
        pub luld_ref_price_tier: u8,
        /// Y N or ' '.
        pub etp_flag: u8,
        /// ETP leverage factor (integer).
        pub etp_leverage_factor: U32,
        /// Y inverse ETP, N not.
        pub inverse_indicator: u8,
    }
}

wire! {
    /// `H` Stock Trading Action.
    StockTradingAction = "H", 25 {
        /// The symbol.
        pub stock: Stock,
        /// H halted, P paused, Q quotation only, T trading.
        pub trading_state: u8,
        /// Reserved.
        pub reserved: u8,
        /// Reason code (e.g. LUDP, MWC1).
        pub reason: Alpha<4>,
    }
}

wire! {
    /// `Y` Reg SHO Short Sale Price Test Restricted Indicator.
    RegShoRestriction = "Y", 20 {
        /// The symbol.
        pub stock: Stock,
        /// 0 none, 1 in effect (intraday drop), 2 remains in effect.
        pub reg_sho_action: u8,
    }
}

wire! {
    /// `L` Market Participant Position.
    MarketParticipantPosition = "L", 26 {
        /// Market participant identifier.
        pub mpid: Alpha<4>,
        /// The symbol.
        pub stock: Stock,
        /// Y primary market maker, N not.
        pub primary_market_maker: u8,
        /// N normal, P passive, S syndicate, R pre-syndicate, L penalty.
        pub market_maker_mode: u8,
        /// A active, E excused, W withdrawn, S suspended, D deleted.
        pub market_participant_state: u8,
    }
}

wire! {
    /// `V` MWCB Decline Level (stock locate is always 0).
    MwcbDeclineLevel = "V", 35 {
        /// Level 1, Price(8).
        pub level1_e8: U64,
        /// Level 2, Price(8).
        pub level2_e8: U64,
        /// Level 3, Price(8).
        pub level3_e8: U64,
    }
}

wire! {
    /// `W` MWCB Status.
    MwcbStatus = "W", 12 {
        /// 1, 2 or 3.
        pub breached_level: u8,
    }
}

wire! {
    /// `K` IPO Quoting Period Update.
    IpoQuotingPeriod = "K", 28 {
        /// The symbol.
        pub stock: Stock,
        /// Release time in seconds since midnight.
        pub ipo_quotation_release_time_s: U32,
        /// A anticipated, C cancelled/postponed.
        pub ipo_quotation_release_qualifier: u8,
        /// IPO price, Price(4).
        pub ipo_price_e4: U32,
    }
}

wire! {
    /// `J` LULD Auction Collar.
    LuldAuctionCollar = "J", 35 {
        /// The symbol.
        pub stock: Stock,
        /// Reference price, Price(4).
        pub auction_collar_reference_price_e4: U32,
        /// Upper collar, Price(4).
        pub upper_auction_collar_price_e4: U32,
        /// Lower collar, Price(4).
        pub lower_auction_collar_price_e4: U32,
        /// Number of extensions of the auction.
        pub auction_collar_extension: U32,
    }
}

wire! {
    /// `h` Operational Halt.
    OperationalHalt = "h", 21 {
        /// The symbol.
        pub stock: Stock,
        /// Q Nasdaq, B BX, X PSX.
        pub market_code: u8,
        /// H halted, T resumed.
        pub operational_halt_action: u8,
    }
}

wire! {
    /// `A` Add Order, no MPID attribution.
    AddOrder = "A", 36 {
        /// Day-unique order reference.
        pub order_ref: U64,
        /// B buy, S sell.
        pub side: u8,
        /// Displayed shares.
        pub shares: U32,
        /// The symbol.
        pub stock: Stock,
        /// Limit price, Price(4).
        pub price_e4: U32,
    }
}

wire! {
    /// `F` Add Order with MPID attribution.
    AddOrderMpid = "F", 40 {
        /// Day-unique order reference.
        pub order_ref: U64,
        /// B buy, S sell.
        pub side: u8,
        /// Displayed shares.
        pub shares: U32,
        /// The symbol.
        pub stock: Stock,
        /// Limit price, Price(4).
        pub price_e4: U32,
        /// The market participant.
        pub attribution: Alpha<4>,
    }
}

wire! {
    /// `E` Order Executed (at the order's price).
    OrderExecuted = "E", 31 {
        /// The order.
        pub order_ref: U64,
        /// Shares executed.
        pub executed_shares: U32,
        /// Day-unique match number.
        pub match_number: U64,
    }
}

wire! {
    /// `C` Order Executed With Price.
    OrderExecutedWithPrice = "C", 36 {
        /// The order.
        pub order_ref: U64,
        /// Shares executed.
        pub executed_shares: U32,
        /// Day-unique match number.
        pub match_number: U64,
        /// Y printable, N not (the shares print later in a cross).
        pub printable: u8,
        /// Execution price, Price(4).
        pub execution_price_e4: U32,
    }
}

wire! {
    /// `X` Order Cancel (partial).
    OrderCancel = "X", 23 {
        /// The order.
        pub order_ref: U64,
        /// Shares removed.
        pub cancelled_shares: U32,
    }
}

wire! {
    /// `D` Order Delete.
    OrderDelete = "D", 19 {
        /// The order.
        pub order_ref: U64,
    }
}

wire! {
    /// `U` Order Replace: delete `original_order_ref`, add `new_order_ref` with the same side
    /// and stock.
    OrderReplace = "U", 35 {
        /// The order being replaced.
        pub original_order_ref: U64,
        /// Its new reference.
        pub new_order_ref: U64,
        /// New displayed shares.
        pub shares: U32,
        /// New limit price, Price(4).
        pub price_e4: U32,
    }
}

wire! {
    /// `P` Trade (non-cross): an execution against a non-displayed order.
    Trade = "P", 44 {
        /// Always 0 since 2010-12-06.
        pub order_ref: U64,
        /// Always B since 2014-07-14.
        pub side: u8,
        /// Shares.
        pub shares: U32,
        /// The symbol.
        pub stock: Stock,
        /// Price(4).
        pub price_e4: U32,
        /// Day-unique match number.
        pub match_number: U64,
    }
}

wire! {
    /// `Q` Cross Trade: the bulk print of an opening, closing, IPO or halt cross.
    CrossTrade = "Q", 40 {
        /// Shares (64-bit here).
        pub shares: U64,
        /// The symbol.
        pub stock: Stock,
        /// Cross price, Price(4).
        pub cross_price_e4: U32,
        /// Day-unique match number.
        pub match_number: U64,
        /// O open, C close, H IPO or halt.
        pub cross_type: u8,
    }
}

wire! {
    /// `B` Broken Trade.
    BrokenTrade = "B", 19 {
        /// The match number of the broken execution.
        pub match_number: U64,
    }
}

wire! {
    /// `I` Net Order Imbalance Indicator.
    Noii = "I", 50 {
        /// Paired shares.
        pub paired_shares: U64,
        /// Imbalance shares.
        pub imbalance_shares: U64,
        /// B buy, S sell, N none, O insufficient orders, P paused.
        pub imbalance_direction: u8,
        /// The symbol.
        pub stock: Stock,
        /// Far price, Price(4).
        pub far_price_e4: U32,
        /// Near price, Price(4).
        pub near_price_e4: U32,
        /// Current reference price, Price(4).
        pub current_reference_price_e4: U32,
        /// O open, C close, H IPO/halt, A extended trading close.
        pub cross_type: u8,
        /// L, 1-9, A, B, C or ' '.
        pub price_variation_indicator: u8,
    }
}

wire! {
    /// `N` Retail Price Improvement Indicator.
    RetailInterest = "N", 20 {
        /// The symbol.
        pub stock: Stock,
        /// B buy side, S sell side, A both, N none.
        pub interest_flag: u8,
    }
}

wire! {
    /// `O` Direct Listing with Capital Raise price discovery.
    DirectListingCapitalRaise = "O", 48 {
        /// The symbol.
        pub stock: Stock,
        /// N not eligible, Y eligible to open.
        pub open_eligibility_status: u8,
        /// Minimum allowable price, Price(4).
        pub minimum_allowable_price_e4: U32,
        /// Maximum allowable price, Price(4).
        pub maximum_allowable_price_e4: U32,
        /// Near execution price, Price(4).
        pub near_execution_price_e4: U32,
        /// Near execution time, nanoseconds since midnight (64-bit).
        pub near_execution_time_ns: U64,
        /// Lower price range collar, Price(4).
        pub lower_price_range_collar_e4: U32,
        /// Upper price range collar, Price(4).
        pub upper_price_range_collar_e4: U32,
    }
}
