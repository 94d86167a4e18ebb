"""Taxonomy codes and word lists of the synthetic H&M-shaped catalogue (data only, no logic)."""

from __future__ import annotations


def _table(text: str) -> list[tuple]:
    """Rows of `a | b | c` text as tuples, numbers converted; keeps the tables readable."""

    def cell(s: str) -> object:
        s = s.strip()
        for kind in (int, float):
            try:
                return kind(s)
            except ValueError:
                pass
        return s

    return [tuple(cell(c) for c in line.split("|")) for line in text.strip().splitlines()]


# Index groups: number, name, additive purchase bias (the real shop sells mostly ladies' and
# Divided clothes although a third of the catalogue is for children).
INDEX_GROUPS = {
    row[0]: row[1:]
    for row in _table("""
1  | Ladieswear    | 1.8
2  | Divided       | 0.3
3  | Menswear      | -0.9
4  | Baby/Children | -2.8
26 | Sport         | -0.4
""")  # noqa: E501
}

# Indexes: code -> (name, index group number, share of style clusters).
INDEXES = {
    row[0]: row[1:]
    for row in _table("""
A | Ladieswear                     | 1  | 0.22
B | Lingeries/Tights               | 1  | 0.07
C | Ladies Accessories             | 1  | 0.06
D | Divided                        | 2  | 0.15
F | Menswear                       | 3  | 0.12
G | Baby Sizes 50-98               | 4  | 0.08
H | Children Sizes 92-140          | 4  | 0.11
I | Children Sizes 134-170         | 4  | 0.08
J | Children Accessories, Swimwear | 4  | 0.04
S | Sport                          | 26 | 0.07
""")  # noqa: E501
}

# Sections: index code, section no, name, kind, product types sold there (;-separated). The kind
# switches garment groups (basic jersey, denim, baby mix, girls' dresses) and the price level.
SECTIONS = _table("""
A | 15 | Womens Everyday Collection       | -       | T-shirt;Top;Blouse;Dress;Trousers;Skirt;Sweater
A | 16 | Womens Everyday Basics           | basic   | T-shirt;Vest top;Top;Leggings/Tights;Bodysuit
A | 11 | Womens Tailoring                 | -       | Blazer;Trousers;Blouse;Dress;Skirt;Coat
A | 6  | Womens Casual                    | -       | T-shirt;Hoodie;Sweater;Trousers;Shorts;Shirt;Cardigan
A | 18 | Womens Trend                     | -       | Dress;Top;Blouse;Skirt;Jumpsuit/Playsuit
A | 14 | Womens Premium                   | premium | Coat;Dress;Blouse;Sweater;Trousers;Blazer
A | 19 | Womens Jackets                   | -       | Jacket;Coat
A | 60 | Womens Swimwear, beachwear       | -       | Swimwear bottom;Bikini top;Swimsuit;Dress
A | 64 | Womens Shoes                     | -       | Sneakers;Boots;Sandals;Ballerinas
A | 8  | Mama                             | -       | Top;Dress;Trousers;T-shirt
B | 61 | Womens Lingerie                  | -       | Bra;Underwear bottom;Underwear body
B | 62 | Womens Nightwear, Socks & Tights | -       | Pyjama set;Night gown;Socks;Tights
C | 66 | Womens Small accessories         | -       | Earring;Necklace;Hair/alice band;Sunglasses;Belt
C | 65 | Womens Big accessories           | -       | Bag;Scarf;Hat/beanie;Gloves;Cap/peaked
D | 53 | Divided Collection               | -       | Top;T-shirt;Dress;Trousers;Skirt;Sweater;Shorts;Blouse
D | 51 | Divided Basics                   | basic   | T-shirt;Vest top;Top;Leggings/Tights;Hoodie
D | 57 | Ladies Denim                     | denim   | Trousers;Shorts;Skirt;Jacket
D | 52 | Divided Accessories              | -       | Earring;Bag;Hat/beanie;Hair/alice band;Socks;Necklace
F | 21 | Contemporary Casual              | -       | T-shirt;Shirt;Sweater;Hoodie;Shorts;Trousers
F | 20 | Contemporary Smart               | premium | Shirt;Blazer;Trousers;Sweater;Polo shirt
F | 55 | Contemporary Street              | -       | T-shirt;Hoodie;Trousers;Jacket;Cap/peaked
F | 26 | Men Underwear                    | basic   | Underwear bottom;Socks;Pyjama set
F | 56 | Denim Men                        | denim   | Trousers;Shorts;Jacket
F | 31 | Mens Outerwear                   | -       | Jacket;Coat
F | 27 | Men Shoes                        | -       | Sneakers;Boots;Sandals
F | 25 | Men Accessories                  | -       | Belt;Cap/peaked;Hat/beanie;Scarf;Sunglasses;Gloves
G | 44 | Baby Essentials & Complements    | baby    | Garment Set;Bodysuit;Socks;Hat/beanie
G | 40 | Baby Girl                        | baby    | Dress;Top;Trousers;Garment Set;Cardigan
G | 41 | Baby Boy                         | baby    | T-shirt;Trousers;Sweater;Garment Set;Dungarees
H | 76 | Kids Girl                        | girls   | Dress;Top;T-shirt;Leggings/Tights;Skirt;Sweater
H | 46 | Kids Boy                         | kids    | T-shirt;Trousers;Hoodie;Shorts;Shirt
H | 45 | Kids Outerwear                   | kids    | Jacket;Coat;Hat/beanie;Gloves
H | 79 | Girls Underwear & Basics         | basic   | Underwear bottom;Socks;Pyjama set;Vest top
I | 77 | Young Girl                       | girls   | Top;Dress;Trousers;Hoodie;Skirt
I | 47 | Young Boy                        | kids    | T-shirt;Trousers;Hoodie;Shorts;Jacket
I | 72 | Boys Underwear & Basics          | basic   | Underwear bottom;Socks;Pyjama set;T-shirt
J | 43 | Kids Accessories, Swimwear & D   | kids    | Swimsuit;Swimwear bottom;Cap/peaked;Bag
J | 42 | Kids & Baby Shoes                | kids    | Sneakers;Boots;Sandals
S | 5  | Ladies H&M Sport                 | -       | Bra;Leggings/Tights;Top;Jacket;T-shirt
S | 22 | Men H&M Sport                    | -       | T-shirt;Shorts;Trousers;Jacket;Hoodie
S | 49 | Kids Sports                      | kids    | T-shirt;Leggings/Tights;Shorts
""")  # noqa: E501
SECTION_PRICE = {"-": 1.0, "basic": 0.8, "premium": 1.4, "denim": 1.1, "baby": 0.6, "kids": 0.7}
SECTION_PRICE["girls"] = 0.7

# Product types: no, name, product group, material family, shape (picks the fit words), garment
# group, list price in SEK, seasonal peak day of year, seasonal amplitude (log scale),
# multi-unit propensity, nouns (;-separated).
PRODUCT_TYPES = _table("""
255 | T-shirt           | Garment Upper body | jersey    | upper | 1005 | 9.99  | 190 | 0.3 | 1.5 | T-shirt;tee
254 | Top               | Garment Upper body | jersey    | upper | 1005 | 12.99 | 170 | 0.3 | 1.0 | top
253 | Vest top          | Garment Upper body | jersey    | upper | 1002 | 6.99  | 190 | 0.6 | 2.0 | vest top;strap top
252 | Sweater           | Garment Upper body | knit      | upper | 1003 | 19.99 | 345 | 0.8 | 0.6 | jumper;sweater
245 | Cardigan          | Garment Upper body | knit      | upper | 1003 | 24.99 | 300 | 0.6 | 0.6 | cardigan
308 | Hoodie            | Garment Upper body | jersey    | upper | 1005 | 19.99 | 320 | 0.5 | 0.6 | hoodie
258 | Blouse            | Garment Upper body | woven     | upper | 1010 | 19.99 | 150 | 0.2 | 0.6 | blouse
259 | Shirt             | Garment Upper body | woven     | upper | 1011 | 19.99 | 120 | 0.2 | 0.6 | shirt
262 | Jacket            | Garment Upper body | outdoor   | upper | 1007 | 34.99 | 290 | 0.7 | 0.2 | jacket;parka
263 | Coat              | Garment Upper body | outdoor   | upper | 1007 | 49.99 | 320 | 1.1 | 0.1 | coat
264 | Blazer            | Garment Upper body | woven     | upper | 1008 | 34.99 | 260 | 0.3 | 0.3 | blazer
257 | Polo shirt        | Garment Upper body | jersey    | upper | 1002 | 14.99 | 180 | 0.5 | 0.8 | polo shirt
256 | Bodysuit          | Garment Upper body | jersey    | upper | 1005 | 9.99  | 100 | 0.2 | 1.5 | body
272 | Trousers          | Garment Lower body | woven     | lower | 1009 | 24.99 | 60  | 0.2 | 0.6 | trousers;joggers
274 | Shorts            | Garment Lower body | woven     | lower | 1025 | 14.99 | 185 | 1.4 | 0.8 | shorts
275 | Skirt             | Garment Lower body | woven     | lower | 1012 | 19.99 | 160 | 0.4 | 0.5 | skirt
273 | Leggings/Tights   | Garment Lower body | jersey    | lower | 1005 | 12.99 | 20  | 0.3 | 1.5 | leggings
265 | Dress             | Garment Full body  | woven     | full  | 1013 | 24.99 | 165 | 0.6 | 0.4 | dress
267 | Jumpsuit/Playsuit | Garment Full body  | woven     | full  | 1013 | 24.99 | 175 | 0.7 | 0.3 | jumpsuit;playsuit
270 | Garment Set       | Garment Full body  | jersey    | full  | 1002 | 17.99 | 90  | 0.2 | 1.0 | set
268 | Dungarees         | Garment Full body  | denim     | full  | 1009 | 19.99 | 110 | 0.2 | 0.3 | dungarees
306 | Bra               | Underwear          | lingerie  | other | 1017 | 14.99 | 120 | 0.1 | 1.2 | bra;bralette
286 | Underwear bottom  | Underwear          | lingerie  | other | 1017 | 5.99  | 120 | 0.1 | 3.0 | briefs;thong;boxer shorts
283 | Underwear body    | Underwear          | lingerie  | other | 1017 | 12.99 | 120 | 0.1 | 0.8 | body
302 | Socks             | Socks & Tights     | jersey    | other | 1021 | 4.99  | 340 | 0.5 | 3.0 | socks
304 | Tights            | Socks & Tights     | jersey    | other | 1021 | 7.99  | 330 | 0.9 | 2.5 | tights
297 | Pyjama set        | Nightwear          | jersey    | other | 1017 | 19.99 | 350 | 0.5 | 0.8 | pyjamas
293 | Night gown        | Nightwear          | woven     | other | 1017 | 17.99 | 170 | 0.3 | 0.5 | nightdress
59  | Swimwear bottom   | Swimwear           | swim      | other | 1018 | 9.99  | 165 | 2.0 | 0.8 | bikini bottoms;swim shorts
298 | Bikini top        | Swimwear           | swim      | other | 1018 | 12.99 | 165 | 2.0 | 0.8 | bikini top
57  | Swimsuit          | Swimwear           | swim      | other | 1018 | 19.99 | 170 | 2.0 | 0.5 | swimsuit
94  | Sneakers          | Shoes              | shoe      | other | 1020 | 29.99 | 110 | 0.3 | 0.1 | trainers;sneakers
87  | Boots             | Shoes              | shoe      | other | 1020 | 34.99 | 320 | 1.0 | 0.1 | boots;ankle boots
91  | Sandals           | Shoes              | shoe      | other | 1020 | 19.99 | 175 | 1.5 | 0.2 | sandals;slides
86  | Ballerinas        | Shoes              | shoe      | other | 1020 | 17.99 | 120 | 0.3 | 0.2 | ballet pumps
66  | Bag               | Accessories        | accessory | other | 1019 | 17.99 | 150 | 0.2 | 0.2 | bag;shopper;shoulder bag
70  | Earring           | Accessories        | metal     | other | 1019 | 5.99  | 160 | 0.2 | 1.0 | earrings;hoop earrings
75  | Hat/beanie        | Accessories        | knit      | other | 1019 | 7.99  | 350 | 1.3 | 0.6 | beanie;hat
80  | Scarf             | Accessories        | knit      | other | 1019 | 12.99 | 350 | 1.1 | 0.4 | scarf
81  | Sunglasses        | Accessories        | accessory | other | 1019 | 7.99  | 175 | 1.3 | 0.5 | sunglasses
67  | Belt              | Accessories        | accessory | other | 1019 | 9.99  | 100 | 0.1 | 0.3 | belt
71  | Gloves            | Accessories        | knit      | other | 1019 | 7.99  | 355 | 1.4 | 0.4 | gloves;mittens
74  | Hair/alice band   | Accessories        | accessory | other | 1019 | 3.99  | 140 | 0.2 | 1.5 | hairband;hair clips
77  | Necklace          | Accessories        | metal     | other | 1019 | 7.99  | 140 | 0.2 | 0.6 | necklace
69  | Cap/peaked        | Accessories        | accessory | other | 1019 | 7.99  | 175 | 0.8 | 0.4 | cap
""")  # noqa: E501

GARMENT_GROUPS = {
    row[0]: row[1]
    for row in _table("""
1002 | Jersey Basic
1003 | Knitwear
1005 | Jersey Fancy
1006 | Woven/Jersey/Knitted mix Baby
1007 | Outdoor
1008 | Dressed
1009 | Trousers
1010 | Blouses
1011 | Shirts
1012 | Skirts
1013 | Dresses Ladies
1014 | Dresses/Skirts girls
1016 | Trousers Denim
1017 | Under-, Nightwear
1018 | Swimwear
1019 | Accessories
1020 | Shoes
1021 | Socks and Tights
1023 | Special Offers
1025 | Shorts
""")  # noqa: E501
}

# Colour groups: code, name, perceived colour value id, perceived colour master id, base weight.
COLOURS = _table("""
9  | Black           | 4 | 5  | 20.0
10 | White           | 3 | 9  | 9.0
11 | Off White       | 1 | 9  | 3.0
73 | Dark Blue       | 4 | 2  | 9.0
72 | Blue            | 2 | 2  | 3.0
71 | Light Blue      | 3 | 2  | 3.0
51 | Light Pink      | 1 | 4  | 5.0
52 | Pink            | 2 | 4  | 2.0
53 | Dark Pink       | 4 | 4  | 0.8
7  | Grey            | 2 | 12 | 3.0
6  | Light Grey      | 3 | 12 | 2.0
8  | Dark Grey       | 4 | 12 | 2.0
12 | Light Beige     | 1 | 11 | 3.0
13 | Beige           | 2 | 11 | 2.0
14 | Dark Beige      | 4 | 11 | 1.0
42 | Red             | 5 | 18 | 2.5
43 | Dark Red        | 4 | 18 | 2.0
19 | Greenish Khaki  | 2 | 20 | 2.0
93 | Dark Green      | 4 | 19 | 1.5
92 | Green           | 7 | 19 | 0.5
91 | Light Green     | 3 | 19 | 0.6
31 | Light Orange    | 3 | 3  | 1.2
32 | Orange          | 5 | 3  | 0.6
22 | Yellow          | 5 | 8  | 1.2
21 | Light Yellow    | 3 | 8  | 0.7
17 | Yellowish Brown | 2 | 13 | 1.2
5  | Gold            | 7 | 15 | 1.3
3  | Silver          | 3 | 15 | 0.7
61 | Light Purple    | 3 | 6  | 0.4
63 | Dark Purple     | 4 | 6  | 0.3
81 | Light Turquoise | 3 | 7  | 0.6
83 | Dark Turquoise  | 4 | 7  | 0.3
""")  # noqa: E501
COLOUR_VALUES = {1: "Dusty Light", 2: "Medium Dusty", 3: "Light", 4: "Dark", 5: "Bright"}
COLOUR_VALUES[7] = "Medium"
COLOUR_MASTERS = {
    row[0]: row[1]
    for row in _table("""
2  | Blue
3  | Orange
4  | Pink
5  | Black
6  | Lilac Purple
7  | Turquoise
8  | Yellow
9  | White
11 | Beige
12 | Grey
13 | Brown
15 | Metal
18 | Red
19 | Green
20 | Khaki green
""")  # noqa: E501
}

# Graphical appearances: number, name, base weight, sentence ({c}: colour, {C}: capitalised).
APPEARANCES = _table("""
1010016 | Solid               | 50.0 | In solid {c}.
1010001 | All over pattern    | 17.0 | Patterned all over in {c}.
1010010 | Melange             | 6.0  | Marled {c} melange finish.
1010017 | Stripe              | 5.0  | {C} with narrow stripes.
1010008 | Front print         | 3.2  | {C} with a printed motif on the front.
1010014 | Placement print     | 3.1  | {C} with a placement print.
1010004 | Check               | 2.2  | Checked pattern in {c}.
1010005 | Colour blocking     | 1.8  | Colour-block design in {c} and contrasting shades.
1010021 | Lace                | 1.5  | {C} lace details.
1010007 | Embroidery          | 1.2  | {C} with embroidered details.
1010009 | Glittering/Metallic | 1.0  | Glittery {c} finish.
1010022 | Jacquard            | 0.8  | Jacquard-weave pattern in {c}.
1010015 | Sequin              | 0.8  | {C} sequins all over.
1010006 | Dot                 | 0.7  | {C} with small dots.
1010002 | Application/3D      | 1.3  | {C} with appliques.
""")  # noqa: E501
DENIM_APPEARANCE = (1010023, "Denim", 0.0, "Washed {c} denim.")

# Materials per family: word for the product name = phrase for the description (;-separated).
MATERIALS = {
    row[0]: [tuple(m.split("=")) for m in row[1].split(";")]
    for row in _table("""
jersey    | jersey=soft cotton jersey;slub=slub jersey;ribbed=ribbed jersey;modal=soft modal jersey;cotton=organic cotton jersey;sweatshirt=brushed sweatshirt fabric
knit      | knit=fine-knit cotton;rib-knit=soft rib-knit;chunky=chunky knit;wool=wool-blend knit;cashmere=cashmere-blend knit;mohair=mohair-blend knit
woven     | linen=airy linen;twill=cotton twill;satin=draped satin;chiffon=airy chiffon;crepe=woven crepe;poplin=cotton poplin;viscose=flowing viscose
denim     | denim=washed denim;stretch=stretch denim;rigid=rigid denim
outdoor   | padded=padded water-repellent fabric;wool=felted wool-blend fabric;teddy=soft faux shearling;softshell=windproof softshell;quilted=quilted nylon
lingerie  | lace=soft lace;microfibre=smooth microfibre;mesh=sheer mesh;cotton=cotton jersey
swim      | ribbed=ribbed swimwear fabric;shimmer=shimmering fabric;recycled=recycled polyamide
shoe      | leather=leather;suede=imitation suede;canvas=cotton canvas;chunky=chunky faux leather;mesh=breathable mesh
accessory | leather=faux leather;straw=braided paper straw;woven=woven fabric;metal=metal;velvet=velvet
sport     | sports=fast-drying functional fabric;recycled=recycled polyester;seamless=seamless stretch fabric;mesh=breathable mesh
metal     | gold-plated=gold-plated metal;silver=silver-coloured metal;pearl=metal with plastic pearls;beaded=metal and glass beads
""")  # noqa: E501
}

# Fit or style words, by shape; a style cluster picks one position and keeps it for every shape.
FITS = {
    row[0]: row[1].split(";")
    for row in _table("""
upper | Slim;Relaxed;Oversized;Fitted;Boxy;Cropped;Regular;Loose
lower | Slim;Wide;Straight;Skinny;Flared;High-waisted;Regular;Loose
full  | Slim;Flared;Wrap;Fitted;A-line;Short;Long;Loose
other | Classic;Chunky;Delicate;Minimal;Statement;Soft;Retro;Sporty
""")  # noqa: E501
}
# Lower-case forms used inside sentences where the bare word would read oddly.
FIT_PHRASES = {"Regular": "regular-fit", "Loose": "loose-fit"}

# Details per product type for the description: an item mentions one or two of them.
FEATURES = {
    row[0]: row[1].split(";")
    for row in _table("""
T-shirt           | a round neckline;short sleeves;a rounded hem;dropped shoulders
Top               | narrow shoulder straps;a V-neck;long sleeves;a smocked bodice;a wide neckline
Vest top          | narrow shoulder straps;a racer back;a straight hem
Sweater           | a ribbed neckline;dropped shoulders;long raglan sleeves;ribbing at the cuffs
Cardigan          | buttons down the front;a V-neck;pockets;long sleeves
Hoodie            | a lined drawstring hood;a kangaroo pocket;ribbed cuffs and hem
Blouse            | a collar;puff sleeves;a concealed button placket;a tie at the neck
Shirt             | a turn-down collar;buttons down the front;a chest pocket;long sleeves
Jacket            | a zip down the front;a hood;side pockets;a stand-up collar
Coat              | notch lapels;a double-breasted fastening;welt pockets;a detachable belt
Blazer            | notch lapels;a single-button fastening;flap front pockets;shoulder pads
Polo shirt        | a ribbed collar;a button placket;short sleeves
Bodysuit          | press-studs at the crotch;long sleeves;a round neckline
Trousers          | a high waist;an elasticated waist;side pockets;tapered legs;a zip fly and button
Shorts            | an elasticated drawstring waist;side pockets;rolled-up hems
Skirt             | a high waist;a concealed zip;a slit at the front;a flared hem
Leggings/Tights   | a wide waistband;a high waist;ankle-length legs
Dress             | a V-neck;short puff sleeves;a tie belt;a flared skirt;a smocked waist
Jumpsuit/Playsuit | a wrapover front;a tie belt;wide legs;narrow shoulder straps
Garment Set       | a top with long sleeves;trousers with an elasticated waist;press-studs
Dungarees         | adjustable straps;a bib pocket;side buttons
Bra               | underwired moulded cups;adjustable shoulder straps;a hook-and-eye fastening
Underwear bottom  | a narrow waistband;a low waist;a lined gusset
Underwear body    | underwired cups;adjustable shoulder straps;a thong back
Socks             | ribbed tops;a reinforced heel;a soft sole
Tights            | an elasticated waist;reinforced toes;a flat seam
Pyjama set        | a top with long sleeves;bottoms with an elasticated waist;piping
Night gown        | narrow shoulder straps;a lace trim;a V-neck
Swimwear bottom   | a high waist;high-cut legs;ties at the sides;a lined front
Bikini top        | padded cups;ties at the back;adjustable straps;an underwire
Swimsuit          | a low back;adjustable shoulder straps;a lined front;high-cut legs
Sneakers          | lacing at the front;a padded tongue;a rubber sole
Boots             | a side zip;a chunky heel;a rubber sole
Sandals           | adjustable straps;a cork footbed;a rubber sole
Ballerinas        | a bow at the front;a cushioned insole;a rubber sole
Bag               | an adjustable shoulder strap;a zip;an inner pocket;two handles
Earring           | a hinged fastening;small pendants;hooks
Hat/beanie        | a turned-up brim;a pompom;a ribbed trim
Scarf             | fringes at the short ends;a soft feel
Sunglasses        | tinted lenses;metal frames;UV protection
Belt              | a metal buckle;a keeper
Gloves            | ribbed cuffs;a soft lining;touchscreen fingertips
Hair/alice band   | a soft elastic;a bow
Necklace          | a lobster clasp;a pendant;an extender chain
Cap/peaked        | an adjustable strap at the back;an embroidered logo;a curved peak
""")  # noqa: E501
}
