//! Differential decode against the `itchy` crate (an independent nom-based ITCH 5.0 parser) over a
//! generated session of every type it supports (all but `h` and `O`): every field equal.

use feed_handler::capture::binaryfile::Records;
use feed_handler::itch::{self, Message};
use itchy::{Body, MessageStream};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::session::{MessageSource, Progress, to_binaryfile};

fn yn(b: bool) -> u8 {
    if b { b'Y' } else { b'N' }
}
fn yn_blank(b: Option<bool>) -> u8 {
    b.map_or(b' ', yn)
}
fn s8(a: &itch::Stock) -> String {
    String::from_utf8(a.0.to_vec()).unwrap()
}
fn s4(a: &itch::Alpha<4>) -> String {
    String::from_utf8(a.0.to_vec()).unwrap()
}
fn side(s: itchy::Side) -> u8 {
    match s {
        itchy::Side::Buy => b'B',
        itchy::Side::Sell => b'S',
    }
}
fn cross(c: itchy::CrossType) -> u8 {
    use itchy::CrossType::*;
    match c {
        Opening => b'O',
        Closing => b'C',
        IpoOrHalted => b'H',
        Intraday => b'I',
        ExtendedTradingClose => b'A',
    }
}

/// Compares one message field by field; panics with the message on a difference.
fn compare(ours: &Message<'_>, theirs: &itchy::Message) {
    let h = ours.header();
    assert_eq!(theirs.tag, h.msg_type);
    assert_eq!(theirs.stock_locate, h.stock_locate.get());
    assert_eq!(theirs.tracking_number, h.tracking_number.get());
    assert_eq!(theirs.timestamp, h.timestamp_ns.get());
    match (ours, &theirs.body) {
        (Message::SystemEvent(m), Body::SystemEvent { event }) => {
            use itchy::EventCode::*;
            let e = match event {
                StartOfMessages => b'O',
                StartOfSystemHours => b'S',
                StartOfMarketHours => b'Q',
                EndOfMarketHours => b'M',
                EndOfSystemHours => b'E',
                EndOfMessages => b'C',
            };
            assert_eq!(m.event_code, e);
        }
        (Message::StockDirectory(m), Body::StockDirectory(d)) => {
            use itchy::{FinancialStatus as F, LuldRefPriceTier as L, MarketCategory as C};
            assert_eq!(s8(&m.stock), d.stock.as_str());
            let cat = match d.market_category {
                C::NasdaqGlobalSelect => b'Q',
                C::NasdaqGlobalMarket => b'G',
                C::NasdaqCapitalMarket => b'S',
                C::Nyse => b'N',
                C::NyseMkt => b'A',
                C::NyseArca => b'P',
                C::BatsZExchange => b'Z',
                C::InvestorsExchange => b'V',
                C::Unavailable => b' ',
            };
            assert_eq!(m.market_category, cat);
            let fs = match d.financial_status {
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
            };
            assert_eq!(m.financial_status, fs);
            assert_eq!(m.round_lot_size.get(), d.round_lot_size);
            assert_eq!(m.round_lots_only, yn(d.round_lots_only));
            let ic = match d.issue_classification {
                itchy::IssueClassification::AmericanDepositaryShare => b'A',
                itchy::IssueClassification::CommonStock => b'C',
                itchy::IssueClassification::OrdinaryShare => b'O',
                itchy::IssueClassification::OtherSecurities => b'Q',
                other => panic!("generator does not use {other:?}"),
            };
            assert_eq!(m.issue_classification, ic);
            let sub = match d.issue_subtype {
                itchy::IssueSubType::ETFIndexFundShares => *b"I ",
                itchy::IssueSubType::NotApplicable => *b"Z ",
                other => panic!("generator does not use {other:?}"),
            };
            assert_eq!(m.issue_sub_type.0, sub);
            assert_eq!(m.authenticity, if d.authenticity { b'P' } else { b'T' });
            assert_eq!(m.short_sale_threshold, yn_blank(d.short_sale_threshold));
            assert_eq!(m.ipo_flag, yn_blank(d.ipo_flag));
            let tier = match d.luld_ref_price_tier {
                L::Tier1 => b'1',
                L::Tier2 => b'2',
                L::Na => b' ',
            };
            assert_eq!(m.luld_ref_price_tier, tier);
            assert_eq!(m.etp_flag, yn_blank(d.etp_flag));
            assert_eq!(m.etp_leverage_factor.get(), d.etp_leverage_factor);
            assert_eq!(m.inverse_indicator, yn(d.inverse_indicator));
        }
        (Message::StockTradingAction(m), Body::TradingAction { stock, trading_state, reason }) => {
            use itchy::TradingState::*;
            assert_eq!(s8(&m.stock), stock.as_str());
            let st = match trading_state {
                Halted => b'H',
                Paused => b'P',
                QuotationOnly => b'Q',
                Trading => b'T',
            };
            assert_eq!(m.trading_state, st);
            assert_eq!(s4(&m.reason), reason.as_str());
        }
        (Message::RegShoRestriction(m), Body::RegShoRestriction { stock, action }) => {
            assert_eq!(s8(&m.stock), stock.as_str());
            let a = match action {
                itchy::RegShoAction::None => b'0',
                itchy::RegShoAction::Intraday => b'1',
                itchy::RegShoAction::Extant => b'2',
            };
            assert_eq!(m.reg_sho_action, a);
        }
        (Message::MarketParticipantPosition(m), Body::ParticipantPosition(p)) => {
            use itchy::{MarketMakerMode as M, MarketParticipantState as S};
            assert_eq!(s4(&m.mpid), p.mpid.as_str());
            assert_eq!(s8(&m.stock), p.stock.as_str());
            assert_eq!(m.primary_market_maker, yn(p.primary_market_maker));
            let mode = match p.market_maker_mode {
                M::Normal => b'N',
                M::Passive => b'P',
                M::Syndicate => b'S',
                M::Presyndicate => b'R',
                M::Penalty => b'L',
            };
            assert_eq!(m.market_maker_mode, mode);
            let st = match p.market_participant_state {
                S::Active => b'A',
                S::Excused => b'E',
                S::Withdrawn => b'W',
                S::Suspended => b'S',
                S::Deleted => b'D',
            };
            assert_eq!(m.market_participant_state, st);
        }
        (Message::MwcbDeclineLevel(m), Body::MwcbDeclineLevel { level1, level2, level3 }) => {
            assert_eq!(m.level1_e8.get(), level1.raw());
            assert_eq!(m.level2_e8.get(), level2.raw());
            assert_eq!(m.level3_e8.get(), level3.raw());
        }
        (Message::MwcbStatus(m), Body::Breach(l)) => {
            let l = match l {
                itchy::LevelBreached::L1 => b'1',
                itchy::LevelBreached::L2 => b'2',
                itchy::LevelBreached::L3 => b'3',
            };
            assert_eq!(m.breached_level, l);
        }
        (Message::IpoQuotingPeriod(m), Body::IpoQuotingPeriod(p)) => {
            assert_eq!(s8(&m.stock), p.stock.as_str());
            assert_eq!(m.ipo_quotation_release_time_s.get(), p.release_time);
            let q = match p.release_qualifier {
                itchy::IpoReleaseQualifier::Anticipated => b'A',
                itchy::IpoReleaseQualifier::Cancelled => b'C',
            };
            assert_eq!(m.ipo_quotation_release_qualifier, q);
            assert_eq!(m.ipo_price_e4.get(), p.price.raw());
        }
        (Message::LuldAuctionCollar(m), Body::LULDAuctionCollar { stock, ref_price, upper_price, lower_price, extension }) => {
            assert_eq!(s8(&m.stock), stock.as_str());
            assert_eq!(m.auction_collar_reference_price_e4.get(), ref_price.raw());
            assert_eq!(m.upper_auction_collar_price_e4.get(), upper_price.raw());
            assert_eq!(m.lower_auction_collar_price_e4.get(), lower_price.raw());
            assert_eq!(m.auction_collar_extension.get(), *extension);
        }
        (Message::AddOrder(m), Body::AddOrder(a)) => {
            assert_eq!(m.order_ref.get(), a.reference);
            assert_eq!(m.side, side(a.side));
            assert_eq!(m.shares.get(), a.shares);
            assert_eq!(s8(&m.stock), a.stock.as_str());
            assert_eq!(m.price_e4.get(), a.price.raw());
            assert!(a.mpid.is_none());
        }
        (Message::AddOrderMpid(m), Body::AddOrder(a)) => {
            assert_eq!(m.order_ref.get(), a.reference);
            assert_eq!(m.side, side(a.side));
            assert_eq!(m.shares.get(), a.shares);
            assert_eq!(s8(&m.stock), a.stock.as_str());
            assert_eq!(m.price_e4.get(), a.price.raw());
            assert_eq!(Some(s4(&m.attribution)), a.mpid.map(|s| s.to_string()));
        }
        (Message::OrderExecuted(m), Body::OrderExecuted { reference, executed, match_number }) => {
            assert_eq!((m.order_ref.get(), m.executed_shares.get(), m.match_number.get()), (*reference, *executed, *match_number));
        }
        (Message::OrderExecutedWithPrice(m), Body::OrderExecutedWithPrice { reference, executed, match_number, printable, price }) => {
            assert_eq!((m.order_ref.get(), m.executed_shares.get(), m.match_number.get()), (*reference, *executed, *match_number));
            assert_eq!(m.printable, yn(*printable));
            assert_eq!(m.execution_price_e4.get(), price.raw());
        }
        (Message::OrderCancel(m), Body::OrderCancelled { reference, cancelled }) => {
            assert_eq!((m.order_ref.get(), m.cancelled_shares.get()), (*reference, *cancelled));
        }
        (Message::OrderDelete(m), Body::DeleteOrder { reference }) => assert_eq!(m.order_ref.get(), *reference),
        (Message::OrderReplace(m), Body::ReplaceOrder(r)) => {
            assert_eq!(m.original_order_ref.get(), r.old_reference);
            assert_eq!(m.new_order_ref.get(), r.new_reference);
            assert_eq!(m.shares.get(), r.shares);
            assert_eq!(m.price_e4.get(), r.price.raw());
        }
        (Message::Trade(m), Body::NonCrossTrade(t)) => {
            assert_eq!(m.order_ref.get(), t.reference);
            assert_eq!(m.side, side(t.side));
            assert_eq!(m.shares.get(), t.shares);
            assert_eq!(s8(&m.stock), t.stock.as_str());
            assert_eq!(m.price_e4.get(), t.price.raw());
            assert_eq!(m.match_number.get(), t.match_number);
        }
        (Message::CrossTrade(m), Body::CrossTrade(c)) => {
            assert_eq!(m.shares.get(), c.shares);
            assert_eq!(s8(&m.stock), c.stock.as_str());
            assert_eq!(m.cross_price_e4.get(), c.cross_price.raw());
            assert_eq!(m.match_number.get(), c.match_number);
            assert_eq!(m.cross_type, cross(c.cross_type));
        }
        (Message::BrokenTrade(m), Body::BrokenTrade { match_number }) => assert_eq!(m.match_number.get(), *match_number),
        (Message::Noii(m), Body::Imbalance(i)) => {
            use itchy::ImbalanceDirection::*;
            assert_eq!(m.paired_shares.get(), i.paired_shares);
            assert_eq!(m.imbalance_shares.get(), i.imbalance_shares);
            let d = match i.imbalance_direction {
                Buy => b'B',
                Sell => b'S',
                NoImbalance => b'N',
                InsufficientOrders => b'O',
            };
            assert_eq!(m.imbalance_direction, d);
            assert_eq!(s8(&m.stock), i.stock.as_str());
            assert_eq!(m.far_price_e4.get(), i.far_price.raw());
            assert_eq!(m.near_price_e4.get(), i.near_price.raw());
            assert_eq!(m.current_reference_price_e4.get(), i.current_ref_price.raw());
            assert_eq!(m.cross_type, cross(i.cross_type));
            assert_eq!(m.price_variation_indicator as char, i.price_variation_indicator);
        }
        (Message::RetailInterest(m), Body::RetailPriceImprovementIndicator(r)) => {
            use itchy::InterestFlag::*;
            assert_eq!(s8(&m.stock), r.stock.as_str());
            let f = match r.interest_flag {
                RPIAvailableBuySide => b'B',
                RPIAvailableSellSide => b'S',
                RPIAvailableBothSides => b'A',
                RPINoneAvailable => b'N',
            };
            assert_eq!(m.interest_flag, f);
        }
        (o, t) => panic!("type differs: ours {o:?}, itchy {t:?}"),
    }
}

#[test]
fn every_field_equals_itchys() {
    let cfg = MarketConfig { seed: 99, symbols: 300, messages: 300_000, itchy_compatible: true, ..Default::default() };
    let mut market = Market::new(cfg);
    let src: &mut dyn MessageSource = &mut market;
    let (bytes, _) = to_binaryfile(src, Vec::new(), &mut Progress::new("test", false)).unwrap();
    let mut types = [0u64; 256];
    let mut n = 0;
    let theirs = MessageStream::from_reader(&bytes[..]);
    let mut ours = Records::new(&bytes);
    for t in theirs {
        let t = t.expect("itchy reads every generated message");
        let o = itch::parse(ours.next().expect("same count").unwrap()).unwrap();
        compare(&o, &t);
        types[o.msg_type() as usize] += 1;
        n += 1;
    }
    assert!(ours.next().is_none(), "same count");
    assert_eq!(n, 300_000);
    // every type itchy supports was compared
    for &t in b"SRHYLVWKJAFECXDUPQBIN" {
        assert!(types[t as usize] > 0, "type {} not covered", t as char);
    }
}
