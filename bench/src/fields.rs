//! Every field of a decoded message as a list of integers, in the specification's order, for
//! our decoder and for the `itchy` crate: the decode benchmark folds these into a checksum (so
//! both decoders read every field and neither can be optimised away), and the differential test
//! compares them message by message.
//!
//! Conventions: one-byte codes are their ASCII byte; alpha fields are their bytes read as a
//! big-endian integer (space padding included); prices are raw Price(4)/Price(8) integers.

use feed_handler::itch::{Alpha, Handler, Message};

/// An alpha field (at most 8 bytes in ITCH 5.0) as a big-endian integer: one load of the fixed
/// width, not a byte at a time.
#[inline]
fn alpha<const N: usize>(a: &Alpha<N>) -> u64 {
    const { assert!(N <= 8) };
    let mut b = [0u8; 8];
    b[8 - N..].copy_from_slice(&a.0);
    u64::from_be_bytes(b)
}

/// The same for itchy's strings: one load when it is 8 bytes (a stock symbol, padded), else a
/// byte at a time.
#[inline]
fn text(s: &str) -> u64 {
    match <&[u8; 8]>::try_from(s.as_bytes()) {
        Ok(b) => u64::from_be_bytes(*b),
        Err(_) => s.bytes().fold(0, |acc, b| (acc << 8) | b as u64),
    }
}

/// A consumer of fields, for [`Visit`].
pub trait Sink {
    /// One field.
    fn field(&mut self, v: u64);
    /// The message's last field has been given.
    fn end(&mut self);
}

/// A [`Handler`] that gives every field of every message to a [`Sink`]: one branch on the type
/// per message, each arm with its own field reads.
#[derive(Debug)]
pub struct Visit<S>(pub S);

#[inline(always)]
fn header(h: &feed_handler::itch::Header, f: &mut impl FnMut(u64)) {
    f(h.msg_type as u64);
    f(h.stock_locate.get() as u64);
    f(h.tracking_number.get() as u64);
    f(h.timestamp_ns.get());
}

macro_rules! our_fields {
    ($f:ident; $($on:ident : $variant:ident($m:ident) => $body:expr $(,)?)*) => {
        /// Our decoder's fields of a message.
        pub fn ours(msg: &Message<'_>, $f: &mut impl FnMut(u64)) {
            header(msg.header(), $f);
            match *msg {
                $(Message::$variant($m) => { $body; })*
            }
        }

        impl<S: Sink> Handler for Visit<S> {
            $(
                #[inline(always)]
                fn $on(&mut self, $m: &feed_handler::itch::$variant) {
                    let $f = &mut |v| self.0.field(v);
                    header(&$m.header, $f);
                    $body;
                    self.0.end();
                }
            )*
        }
    };
}

our_fields! { f;
        on_system_event: SystemEvent(m) => f(m.event_code as u64),
    on_stock_directory: StockDirectory(m) => {
        for v in [
            alpha(&m.stock),
            m.market_category as u64,
            m.financial_status as u64,
            m.round_lot_size.get() as u64,
            m.round_lots_only as u64,
            m.issue_classification as u64,
            alpha(&m.issue_sub_type),
            m.authenticity as u64,
            m.short_sale_threshold as u64,
            m.ipo_flag as u64,
            m.luld_ref_price_tier as u64,
            m.etp_flag as u64,
            m.etp_leverage_factor.get() as u64,
            m.inverse_indicator as u64,
        ] {
            f(v)
        }
    }
    on_stock_trading_action: StockTradingAction(m) => {
        f(alpha(&m.stock));
        f(m.trading_state as u64);
        f(alpha(&m.reason));
    }
    on_reg_sho_restriction: RegShoRestriction(m) => {
        f(alpha(&m.stock));
        f(m.reg_sho_action as u64);
    }
    on_market_participant_position: MarketParticipantPosition(m) => {
        f(alpha(&m.mpid));
        f(alpha(&m.stock));
        f(m.primary_market_maker as u64);
        f(m.market_maker_mode as u64);
        f(m.market_participant_state as u64);
    }
    on_mwcb_decline_level: MwcbDeclineLevel(m) => {
        f(m.level1_e8.get());
        f(m.level2_e8.get());
        f(m.level3_e8.get());
    }
    on_mwcb_status: MwcbStatus(m) => f(m.breached_level as u64),
    on_ipo_quoting_period: IpoQuotingPeriod(m) => {
        f(alpha(&m.stock));
        f(m.ipo_quotation_release_time_s.get() as u64);
        f(m.ipo_quotation_release_qualifier as u64);
        f(m.ipo_price_e4.get() as u64);
    }
    on_luld_auction_collar: LuldAuctionCollar(m) => {
        f(alpha(&m.stock));
        f(m.auction_collar_reference_price_e4.get() as u64);
        f(m.upper_auction_collar_price_e4.get() as u64);
        f(m.lower_auction_collar_price_e4.get() as u64);
        f(m.auction_collar_extension.get() as u64);
    }
    on_operational_halt: OperationalHalt(m) => {
        f(alpha(&m.stock));
        f(m.market_code as u64);
        f(m.operational_halt_action as u64);
    }
    on_add_order: AddOrder(m) => {
        f(m.order_ref.get());
        f(m.side as u64);
        f(m.shares.get() as u64);
        f(alpha(&m.stock));
        f(m.price_e4.get() as u64);
    }
    on_add_order_mpid: AddOrderMpid(m) => {
        f(m.order_ref.get());
        f(m.side as u64);
        f(m.shares.get() as u64);
        f(alpha(&m.stock));
        f(m.price_e4.get() as u64);
        f(alpha(&m.attribution));
    }
    on_order_executed: OrderExecuted(m) => {
        f(m.order_ref.get());
        f(m.executed_shares.get() as u64);
        f(m.match_number.get());
    }
    on_order_executed_with_price: OrderExecutedWithPrice(m) => {
        f(m.order_ref.get());
        f(m.executed_shares.get() as u64);
        f(m.match_number.get());
        f(m.printable as u64);
        f(m.execution_price_e4.get() as u64);
    }
    on_order_cancel: OrderCancel(m) => {
        f(m.order_ref.get());
        f(m.cancelled_shares.get() as u64);
    }
    on_order_delete: OrderDelete(m) => f(m.order_ref.get()),
    on_order_replace: OrderReplace(m) => {
        f(m.original_order_ref.get());
        f(m.new_order_ref.get());
        f(m.shares.get() as u64);
        f(m.price_e4.get() as u64);
    }
    on_trade: Trade(m) => {
        f(m.order_ref.get());
        f(m.side as u64);
        f(m.shares.get() as u64);
        f(alpha(&m.stock));
        f(m.price_e4.get() as u64);
        f(m.match_number.get());
    }
    on_cross_trade: CrossTrade(m) => {
        f(m.shares.get());
        f(alpha(&m.stock));
        f(m.cross_price_e4.get() as u64);
        f(m.match_number.get());
        f(m.cross_type as u64);
    }
    on_broken_trade: BrokenTrade(m) => f(m.match_number.get()),
    on_noii: Noii(m) => {
        f(m.paired_shares.get());
        f(m.imbalance_shares.get());
        f(m.imbalance_direction as u64);
        f(alpha(&m.stock));
        f(m.far_price_e4.get() as u64);
        f(m.near_price_e4.get() as u64);
        f(m.current_reference_price_e4.get() as u64);
        f(m.cross_type as u64);
        f(m.price_variation_indicator as u64);
    }
    on_retail_interest: RetailInterest(m) => {
        f(alpha(&m.stock));
        f(m.interest_flag as u64);
    }
    on_direct_listing_capital_raise: DirectListingCapitalRaise(m) => {
        f(alpha(&m.stock));
        f(m.open_eligibility_status as u64);
        f(m.minimum_allowable_price_e4.get() as u64);
        f(m.maximum_allowable_price_e4.get() as u64);
        f(m.near_execution_price_e4.get() as u64);
        f(m.near_execution_time_ns.get());
        f(m.lower_price_range_collar_e4.get() as u64);
        f(m.upper_price_range_collar_e4.get() as u64);
    }
}

fn yn(b: bool) -> u64 {
    if b { b'Y' as u64 } else { b'N' as u64 }
}

fn yn_blank(b: Option<bool>) -> u64 {
    b.map_or(b' ' as u64, yn)
}

fn side(s: itchy::Side) -> u64 {
    match s {
        itchy::Side::Buy => b'B' as u64,
        itchy::Side::Sell => b'S' as u64,
    }
}

fn cross(c: itchy::CrossType) -> u64 {
    use itchy::CrossType::*;
    (match c {
        Opening => b'O',
        Closing => b'C',
        IpoOrHalted => b'H',
        Intraday => b'I',
        ExtendedTradingClose => b'A',
    }) as u64
}

/// The `itchy` crate's fields of `m`, in the same order and conventions as [`ours`]. Codes that
/// itchy turns into enums are turned back into their bytes. Issue classifications and
/// sub-types that the generator does not use map to 0 (and so would show as a difference).
pub fn theirs(m: &itchy::Message, f: &mut impl FnMut(u64)) {
    use itchy::Body;
    f(m.tag as u64);
    f(m.stock_locate as u64);
    f(m.tracking_number as u64);
    f(m.timestamp);
    match &m.body {
        Body::SystemEvent { event } => {
            use itchy::EventCode::*;
            f((match event {
                StartOfMessages => b'O',
                StartOfSystemHours => b'S',
                StartOfMarketHours => b'Q',
                EndOfMarketHours => b'M',
                EndOfSystemHours => b'E',
                EndOfMessages => b'C',
            }) as u64)
        }
        Body::StockDirectory(d) => {
            use itchy::{
                FinancialStatus as F, IssueClassification as I, IssueSubType as T,
                LuldRefPriceTier as L, MarketCategory as C,
            };
            f(text(&d.stock));
            f((match d.market_category {
                C::NasdaqGlobalSelect => b'Q',
                C::NasdaqGlobalMarket => b'G',
                C::NasdaqCapitalMarket => b'S',
                C::Nyse => b'N',
                C::NyseMkt => b'A',
                C::NyseArca => b'P',
                C::BatsZExchange => b'Z',
                C::InvestorsExchange => b'V',
                C::Unavailable => b' ',
            }) as u64);
            f((match d.financial_status {
                F::Normal => b'N',
                F::Deficient => b'D',
                F::Delinquent => b'E',
                F::Bankrupt => b'Q',
                F::Suspended => b'S',
                F::DeficientBankrupt => b'G',
                F::DeficientDelinquent => b'H',
                F::DelinquentBankrupt => b'J',
                F::DeficientDelinquentBankrupt => b'K',
                F::EtpSuspended => b'C',
                F::Unavailable => b' ',
            }) as u64);
            f(d.round_lot_size as u64);
            f(yn(d.round_lots_only));
            f((match d.issue_classification {
                I::AmericanDepositaryShare => b'A',
                I::CommonStock => b'C',
                I::OrdinaryShare => b'O',
                I::OtherSecurities => b'Q',
                _ => 0,
            }) as u64);
            f(match d.issue_subtype {
                T::ETFIndexFundShares => text("I "),
                T::NotApplicable => text("Z "),
                _ => 0,
            });
            f(if d.authenticity {
                b'P' as u64
            } else {
                b'T' as u64
            });
            f(yn_blank(d.short_sale_threshold));
            f(yn_blank(d.ipo_flag));
            f((match d.luld_ref_price_tier {
                L::Tier1 => b'1',
                L::Tier2 => b'2',
                L::Na => b' ',
            }) as u64);
            f(yn_blank(d.etp_flag));
            f(d.etp_leverage_factor as u64);
            f(yn(d.inverse_indicator));
        }
        Body::TradingAction {
            stock,
            trading_state,
            reason,
        } => {
            use itchy::TradingState::*;
            f(text(stock));
            f((match trading_state {
                Halted => b'H',
                Paused => b'P',
                QuotationOnly => b'Q',
                Trading => b'T',
            }) as u64);
            f(text(reason));
        }
        Body::RegShoRestriction { stock, action } => {
            f(text(stock));
            f((match action {
                itchy::RegShoAction::None => b'0',
                itchy::RegShoAction::Intraday => b'1',
                itchy::RegShoAction::Extant => b'2',
            }) as u64);
        }
        Body::ParticipantPosition(p) => {
            use itchy::{MarketMakerMode as M, MarketParticipantState as S};
            f(text(&p.mpid));
            f(text(&p.stock));
            f(yn(p.primary_market_maker));
            f((match p.market_maker_mode {
                M::Normal => b'N',
                M::Passive => b'P',
                M::Syndicate => b'S',
                M::Presyndicate => b'R',
                M::Penalty => b'L',
            }) as u64);
            f((match p.market_participant_state {
                S::Active => b'A',
                S::Excused => b'E',
                S::Withdrawn => b'W',
                S::Suspended => b'S',
                S::Deleted => b'D',
            }) as u64);
        }
        Body::MwcbDeclineLevel {
            level1,
            level2,
            level3,
        } => {
            f(level1.raw());
            f(level2.raw());
            f(level3.raw());
        }
        Body::Breach(l) => f((match l {
            itchy::LevelBreached::L1 => b'1',
            itchy::LevelBreached::L2 => b'2',
            itchy::LevelBreached::L3 => b'3',
        }) as u64),
        Body::IpoQuotingPeriod(p) => {
            f(text(&p.stock));
            f(p.release_time as u64);
            f((match p.release_qualifier {
                itchy::IpoReleaseQualifier::Anticipated => b'A',
                itchy::IpoReleaseQualifier::Cancelled => b'C',
            }) as u64);
            f(p.price.raw() as u64);
        }
        Body::LULDAuctionCollar {
            stock,
            ref_price,
            upper_price,
            lower_price,
            extension,
        } => {
            f(text(stock));
            f(ref_price.raw() as u64);
            f(upper_price.raw() as u64);
            f(lower_price.raw() as u64);
            f(*extension as u64);
        }
        Body::AddOrder(a) => {
            f(a.reference);
            f(side(a.side));
            f(a.shares as u64);
            f(text(&a.stock));
            f(a.price.raw() as u64);
            if let Some(mpid) = &a.mpid {
                f(text(mpid));
            }
        }
        Body::OrderExecuted {
            reference,
            executed,
            match_number,
        } => {
            f(*reference);
            f(*executed as u64);
            f(*match_number);
        }
        Body::OrderExecutedWithPrice {
            reference,
            executed,
            match_number,
            printable,
            price,
        } => {
            f(*reference);
            f(*executed as u64);
            f(*match_number);
            f(yn(*printable));
            f(price.raw() as u64);
        }
        Body::OrderCancelled {
            reference,
            cancelled,
        } => {
            f(*reference);
            f(*cancelled as u64);
        }
        Body::DeleteOrder { reference } => f(*reference),
        Body::ReplaceOrder(r) => {
            f(r.old_reference);
            f(r.new_reference);
            f(r.shares as u64);
            f(r.price.raw() as u64);
        }
        Body::NonCrossTrade(t) => {
            f(t.reference);
            f(side(t.side));
            f(t.shares as u64);
            f(text(&t.stock));
            f(t.price.raw() as u64);
            f(t.match_number);
        }
        Body::CrossTrade(c) => {
            f(c.shares);
            f(text(&c.stock));
            f(c.cross_price.raw() as u64);
            f(c.match_number);
            f(cross(c.cross_type));
        }
        Body::BrokenTrade { match_number } => f(*match_number),
        Body::Imbalance(i) => {
            use itchy::ImbalanceDirection::*;
            f(i.paired_shares);
            f(i.imbalance_shares);
            f((match i.imbalance_direction {
                Buy => b'B',
                Sell => b'S',
                NoImbalance => b'N',
                InsufficientOrders => b'O',
            }) as u64);
            f(text(&i.stock));
            f(i.far_price.raw() as u64);
            f(i.near_price.raw() as u64);
            f(i.current_ref_price.raw() as u64);
            f(cross(i.cross_type));
            f(i.price_variation_indicator as u64);
        }
        Body::RetailPriceImprovementIndicator(r) => {
            use itchy::InterestFlag::*;
            f(text(&r.stock));
            f((match r.interest_flag {
                RPIAvailableBuySide => b'B',
                RPIAvailableSellSide => b'S',
                RPIAvailableBothSides => b'A',
                RPINoneAvailable => b'N',
            }) as u64);
        }
    }
}
